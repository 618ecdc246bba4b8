"""Sweep specs, their validation, Tuner assembly and the ``python -m search`` CLI; for your
own Ray jobs, :func:`teacher_bank` (build or find a teacher bank) and :func:`config_of` (a
trial's runnable config from its results). Importing it does not import Ray."""

from search.spec import SpecError, SweepSpec, load_spec, validate_spec

__all__ = [
    "SpecError",
    "SweepSpec",
    "build_teacher",
    "checkpoint_of",
    "config_of",
    "confirm_sweep",
    "load_spec",
    "run_sweep",
    "teacher_bank",
    "validate_spec",
]


def __getattr__(name: str):
    if name in ("run_sweep", "build_teacher", "teacher_bank"):  # import Ray: on first use
        import search.sweep

        return getattr(search.sweep, name)
    if name in ("config_of", "checkpoint_of"):
        import search.configs

        return getattr(search.configs, name)
    if name == "confirm_sweep":
        from search.confirm import confirm_sweep

        return confirm_sweep
    raise AttributeError(f"module 'search' has no attribute {name!r}")
