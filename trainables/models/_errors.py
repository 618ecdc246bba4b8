"""The one error type a user's model settings can cause."""

from __future__ import annotations


class ModelError(ValueError):
    """A model that cannot be built for this data and task.

    The message is one line starting with the field's dotted path (``model.kind: ...``), naming
    the bad value and what is allowed, so it reads well in a trial's error column.
    """


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


def describe(error: BaseException) -> str:
    """``first_line(error)`` with the type name in front, unless it is a plain
    ``RuntimeError`` (torch's shape errors say enough on their own)."""
    text = first_line(error)
    if type(error) is RuntimeError and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
