"""Errors a user can fix: the CLI prints them as one line and exits with code 2 (bad input,
nothing started) or 1 (:class:`SweepStorageError`: the disk failed while the sweep ran)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path


class SweepInputError(ValueError):
    """A problem the user can fix (exit code 2 from the CLI)."""


class SweepExistsError(SweepInputError):
    """The sweep directory holds a sweep started from another spec (nothing is overwritten)."""


class RayConnectError(SweepInputError):
    """``--address`` names no reachable Ray cluster."""


class RayAuthError(RayConnectError):
    """The Ray cluster (or its Jobs server) wants an authentication token this machine did
    not send, or refused the one it sent."""


class ClusterPythonError(SweepInputError):
    """The interpreter a submitted job would run lacks the project's dependencies."""


# Where Ray 2.60 reads a client's token, in its order; it sends one only under RAY_AUTH_MODE=token
# (an explicit --address never turns token mode on by itself).
_TOKEN_HOWTO = (
    "export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (or put the token in "
    "~/.ray/auth_token, or in a file named by RAY_AUTH_TOKEN_PATH); "
    "`ray get-auth-token` on the head node prints it"
)


def _token_source() -> tuple[str, bool]:
    """Where Ray would read this machine's token, and whether a token is there."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN", True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    name = f"RAY_AUTH_TOKEN_PATH ({path})" if path else "~/.ray/auth_token"
    file = Path(path) if path else Path.home() / ".ray" / "auth_token"
    try:
        return name, bool(file.read_text().strip())
    except OSError:
        return name, False


def ray_auth_error(what: str) -> RayAuthError:
    """The one-line error for a cluster that refused this machine's token (or its absence):
    ``what`` names the server, e.g. ``"the Ray cluster at 'head:6379'"``."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        return RayAuthError(
            f"address: {what} requires token authentication and this machine sent no token "
            f"(RAY_AUTH_MODE is not 'token'): {_TOKEN_HOWTO}"
        )
    source, found = _token_source()
    if not found:
        return RayAuthError(
            f"address: RAY_AUTH_MODE=token but no token in {source} to send to {what}: "
            f"{_TOKEN_HOWTO}"
        )
    return RayAuthError(
        f"address: {what} refused the token in {source}, which is not this cluster's: "
        f"{_TOKEN_HOWTO}"
    )


class StorageError(SweepInputError):
    """The storage path is not shared by every node of the cluster."""


class SweepStorageError(RuntimeError):
    """The disk filled up, or became read-only, while the sweep ran (exit code 1): what was
    written is intact and the same command resumes the sweep once there is room."""


# errno values that mean the storage, not the sweep, failed
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system"}  # fmt: skip
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] [^\n:']*(?:: '([^'\n]+)')?")


def storage_problem(exc: BaseException, sweep_dir: Path) -> SweepStorageError | None:
    """The :class:`SweepStorageError` ``exc`` amounts to, if its cause (an ``OSError`` in this
    process, or the text of one raised in a trial) is a full or read-only disk; else None."""
    seen: set[int] = set()
    chain: BaseException | None = exc
    found: tuple[int, str | None] | None = None
    while chain is not None and id(chain) not in seen and found is None:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno in _STORAGE_ERRNOS:
            found = (chain.errno, chain.filename)
        chain = chain.__cause__ or chain.__context__
    if found is None:  # a trial's error reaches the driver as text
        for match in _ERRNO_TEXT.finditer(getattr(exc, "detail", str(exc))):
            if int(match[1]) in _STORAGE_ERRNOS:
                found = (int(match[1]), match[2])
                break
    if found is None:
        return None
    code, filename = found
    where = f" writing {filename!r}" if filename else f" under {str(sweep_dir)!r}"
    return SweepStorageError(
        f"storage: {_STORAGE_ERRNOS[code]}{where}; what finished is saved in {sweep_dir}: "
        "make room (or remount it writable) and run the same command again to resume"
    )
