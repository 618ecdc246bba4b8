"""Errors a user can fix: the CLI prints them as one line and exits with code 2 (bad input,
nothing started) or 1 (:class:`SweepStorageError`: the disk failed while the sweep ran)."""

from __future__ import annotations

import errno
import re
from pathlib import Path


class SweepInputError(ValueError):
    """A problem the user can fix (exit code 2 from the CLI)."""


class SweepExistsError(SweepInputError):
    """The sweep directory holds a sweep started from another spec (nothing is overwritten)."""


class RayConnectError(SweepInputError):
    """``--address`` names no reachable Ray cluster."""


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
