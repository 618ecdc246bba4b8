"""A user module whose import fails (its dependency is not installed)."""

import no_such_dependency_for_tests  # noqa: F401


def model():  # pragma: no cover - never reached
    raise AssertionError
