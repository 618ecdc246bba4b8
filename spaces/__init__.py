"""Search spaces: define-by-run functions of an Optuna trial, plus their bounds.

A space draws settings named by their dotted config paths (``distill.temperature``); the
sweep nests them into the student trainable's config (:func:`trainables.config.nest`).
Spaces do no computation; they only branch.
"""

from spaces._distillation import (
    NOT_SEARCHABLE,
    PARAMETER_PATHS,
    PARAMETERS,
    PRESETS,
    Parameter,
    SpaceBounds,
    distillation_space,
    preset,
    suggest_config,
    suggestion,
    supported,
)

__all__ = [
    "NOT_SEARCHABLE",
    "PARAMETERS",
    "PARAMETER_PATHS",
    "PRESETS",
    "Parameter",
    "SpaceBounds",
    "distillation_space",
    "preset",
    "suggest_config",
    "suggestion",
    "supported",
]
