"""Sweep specs, their validation, Tuner assembly and the ``python -m search`` CLI."""

from search.spec import SpecError, SweepSpec, load_spec, validate_spec

__all__ = ["SpecError", "SweepSpec", "confirm_sweep", "load_spec", "run_sweep", "validate_spec"]


def __getattr__(name: str):
    if name == "run_sweep":  # imports Ray; keep `import search` (and validation) light
        from search.sweep import run_sweep

        return run_sweep
    if name == "confirm_sweep":
        from search.confirm import confirm_sweep

        return confirm_sweep
    raise AttributeError(f"module 'search' has no attribute {name!r}")
