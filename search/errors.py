"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class SweepInputError(ValueError):
    """A problem the user can fix (exit code 2 from the CLI)."""


class SweepExistsError(SweepInputError):
    """The sweep directory holds a sweep started from another spec (nothing is overwritten)."""


class RayConnectError(SweepInputError):
    """``--address`` names no reachable Ray cluster."""


class StorageError(SweepInputError):
    """The storage path is not shared by every node of the cluster."""
