"""Search spaces: define-by-run functions of an Optuna trial, plus their bounds.

A space writes ``/``-separated parameter names (``distill/temperature``) that unflatten into
the student trainable's nested config. Spaces do no computation; they only branch.
"""

from spaces._distillation import PRESETS, SpaceBounds, distillation_space, preset, suggest_config

__all__ = ["PRESETS", "SpaceBounds", "distillation_space", "preset", "suggest_config"]
