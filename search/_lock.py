"""One driver per sweep: a lock file in the sweep directory that works on shared storage.

``<sweep>/.lock`` holds JSON naming its driver: host, pid, start time (``started``), a random
``token``, the process's own start time (so a reused pid is not taken for the driver) and the
machine (boot id and pid namespace: two containers may share a host name). It is created
atomically, in a way NFS keeps atomic: the content goes to a private temporary file, which is
hard-linked to the lock name (``link`` is atomic on the server; a retried ``link`` whose first
try succeeded reports ``EEXIST``, so success is read from the temporary file's link count),
with ``O_CREAT | O_EXCL`` (atomic on NFSv3+) where the filesystem has no hard links. No
``flock``/``fcntl`` locks: NFS clients do not all support them, and they vanish with the
client that held them. While held, a daemon thread touches the lock every ``heartbeat_s``.

A lock is *stale* (its driver is gone) when

- its driver ran on this machine (same host name, boot and pid namespace) and that process is
  dead, or its pid now belongs to a process started at another time; or
- we cannot see its driver's process (another machine, or a platform without ``/proc`` or
  psutil) and the lock was not touched for ``stale_after_s``.

The age of a lock is its mtime measured against the mtime of a file this process creates in
the sweep directory at that moment, so both times come from one clock: on NFS the server
stamps both (creation, and ``utime`` to "now", are set to server time), and the two drivers'
clocks never meet. Caveat: where the storage takes times from its clients (some FUSE and SMB
mounts), a driver's clock that runs behind the reader's by more than ``stale_after_s -
heartbeat_s`` makes its live lock look stale: keep the hosts' clocks in sync (NTP). The lock's
attributes are read through a fresh ``open`` (NFS's close-to-open consistency revalidates
them), so a reader sees the latest heartbeat, not one its attribute cache kept.

A stale lock is taken over in three steps: under the breaker lock ``.lock.break`` (created in
the same way; held for milliseconds, so stale after 30 s or when its process died) the lock
is read again and must be the very version judged stale (same token, inode and mtime: a
heartbeat in between makes it fresh); it is renamed to a private name and checked there
(``rename`` is atomic, so the file checked is the file removed; one that fails the check is
linked back); then the usual atomic create decides who holds the lock. So two drivers finding
one stale lock never both hold it, and no driver removes a lock it has not verified.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import SweepInputError

LOCK_NAME = ".lock"
BREAK_STALE_S = 30.0  # a breaker is held for milliseconds: one older than this was abandoned
PATIENCE_S = 60.0  # how long acquire goes on through races (locks released, broken, re-taken)
_POLL_S = 0.05
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}

log = logging.getLogger(__name__)


class SweepLockedError(SweepInputError):
    """Another driver runs the sweep (exit code 2 from the CLI); ``holder``: its lock's content."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


class SweepLockLost(RuntimeError):
    """Another driver took this run's sweep over (exit code 1): its lock had looked stale."""


class SweepLock:
    """The lock making one driver at a time the owner of ``sweep_dir`` (see the module doc).

    ``acquire`` raises :class:`SweepLockedError` naming the holder while another driver's
    lock is fresh, and takes over a stale one; ``release`` removes the lock if it is still
    ours. A context manager: ``with SweepLock(spec.sweep_dir): ...``.
    """

    def __init__(
        self,
        sweep_dir: Path,
        *,
        heartbeat_s: float = 10.0,
        stale_after_s: float = 120.0,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        if not heartbeat_s > 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s!r}")
        if not stale_after_s > heartbeat_s:
            raise ValueError(
                f"stale_after_s must exceed heartbeat_s ({heartbeat_s!r}), got {stale_after_s!r}"
            )
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / LOCK_NAME
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._token: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: dict[str, Any] | None = None  # who took the lock over, if anyone did
        self.on_lost = on_lost  # called (from the heartbeat thread) when it is taken over

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock (creating ``sweep_dir`` if needed); :class:`SweepLockedError` if a
        live driver holds it."""
        if self._token is not None:
            raise RuntimeError(f"this SweepLock already holds {self.path}")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        info = _our_info()
        content = json.dumps(info).encode()
        deadline = time.monotonic() + PATIENCE_S
        while not _create(self.path, content):
            seen = _read(self.path)
            if time.monotonic() > deadline:  # others keep taking it: never seen free
                raise self._locked(seen)
            if seen is None:
                continue  # released meanwhile
            age = _fs_now(self.sweep_dir) - seen.mtime
            if _stale(seen, age, self.stale_after_s):
                self._break(seen)
            elif not seen.info and age < 5.0:  # created with O_EXCL, its content on its way
                time.sleep(_POLL_S)
            else:
                raise self._locked(seen)
        self._token = info["token"]
        self.lost = None
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._heartbeat, name=f"sweep-lock:{self.sweep_dir.name}", daemon=True
        )
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours (idempotent). Never
        raises: a lock that cannot be removed (a read-only or full disk, the very problem the
        sweep may be ending with) is left for the next run, which takes it over."""
        token, self._token = self._token, None
        if token is None:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        try:
            ours = _read(self.path)  # checked before the rename too: never move another's
            if (
                ours is None
                or ours.info.get("token") != token
                or not _remove_if(self.path, lambda seen: seen.info.get("token") == token)
            ):
                log.warning("sweep lock %s was no longer ours; left it in place", self.path)
        except OSError as exc:
            log.warning("sweep lock %s left in place (%s); the next run takes it over",
                        self.path, exc.strerror or exc)  # fmt: skip

    def _beat(self) -> bool:
        """Touch the lock if it is still ours; False if it is not (it was taken over)."""
        seen = _read(self.path)
        if seen is None or seen.info.get("token") != self._token:
            self._lose(seen.info if seen is not None else {})
            return False
        os.utime(self.path)  # on NFS: set to the server's time
        return True

    def _lose(self, holder: dict[str, Any]) -> None:
        """Another driver took the lock over (ours looked stale: heartbeats failed for longer
        than ``stale_after_s``): say so and call ``on_lost`` (the sweep stops its run, as
        Ctrl-C would, rather than run one sweep twice, and ends with :meth:`lost_error`)."""
        self.lost = holder
        log.error("sweep lock %s was taken over by pid %s on host %s",
                  self.path, holder.get("pid", "?"), holder.get("host", "?"))  # fmt: skip
        if self.on_lost is not None:
            self.on_lost()

    def lost_error(self) -> SweepLockLost:
        holder = self.lost or {}
        return SweepLockLost(
            f"name: sweep {self.sweep_dir.name!r} was taken over by pid "
            f"{_one_line(holder.get('pid') or '?')} on host {_one_line(holder.get('host') or '?')}"
            " while this run's lock could not be refreshed; this run stopped (what it "
            "finished is saved)"
        )

    def _heartbeat(self) -> None:
        failing = False
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._beat():
                    return
                failing = False
            except OSError as exc:  # a storage hiccup: the next beat tries again
                if not failing:  # once per outage, not every beat
                    log.warning("sweep lock %s: heartbeat failed: %s", self.path, exc)
                failing = True

    def _break(self, seen: _Seen) -> None:
        """Remove the stale lock ``seen`` unless it changed meanwhile, holding the breaker
        lock so that no two drivers break it at once (the later could remove the new lock of
        the earlier). Returns without breaking when another driver is breaking it."""
        breaker = self.path.with_name(f"{LOCK_NAME}.break")
        token = _take_breaker(breaker, lambda: _identity(_read(self.path)) != seen.identity)
        if token is None:
            return
        try:
            if _identity(_read(self.path)) == seen.identity:  # still that stale version
                _remove_if(self.path, lambda now: now.identity == seen.identity)
        finally:
            _remove_if(breaker, lambda now: now.info.get("token") == token)

    def _locked(self, seen: _Seen | None) -> SweepLockedError:
        return locked_error(self.sweep_dir, seen.info if seen is not None else {})


def locked_error(sweep_dir: Path, info: dict[str, Any]) -> SweepLockedError:
    """The one-line refusal naming the driver that holds ``sweep_dir``'s lock."""
    pid, host, since = (_one_line(info.get(key) or "?") for key in ("pid", "host", "started"))
    return SweepLockedError(
        f"name: sweep {sweep_dir.name!r} in {sweep_dir} is being run by pid {pid} on host "
        f"{host} since {since} (lock {sweep_dir / LOCK_NAME}); wait for it, or stop that run",
        info,
    )


def lock_holder(sweep_dir: Path, *, stale_after_s: float = 120.0) -> dict[str, Any] | None:
    """The content of the sweep's lock (``host``, ``pid``, ``started``, ``token``, ...), or
    None when it is free: no lock, or a stale one (the next run takes it over)."""
    sweep_dir = Path(sweep_dir)
    seen = _read(sweep_dir / LOCK_NAME)
    if seen is None or _stale(seen, _fs_now(sweep_dir) - seen.mtime, stale_after_s):
        return None
    return {"host": None, "pid": None, "started": None, "token": None, **seen.info}


@dataclass(frozen=True)
class _Seen:
    """A lock file as read once: its content (``{}`` if unreadable) and, with its inode and
    mtime, the identity of that version (a heartbeat, or a new lock, changes it)."""

    info: dict[str, Any]
    ino: int
    mtime_ns: int

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    @property
    def identity(self) -> tuple[Any, int, int]:
        return (self.info.get("token"), self.ino, self.mtime_ns)


def _identity(seen: _Seen | None) -> tuple[Any, int, int] | None:
    return seen.identity if seen is not None else None


def _read(path: Path) -> _Seen | None:
    """The lock file at ``path``, None if there is none. The ``open`` revalidates an NFS
    client's cached attributes (close-to-open consistency): the mtime is the latest."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        stat = os.fstat(fd)
        raw = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    try:
        info = json.loads(raw)
    except ValueError:
        info = {}
    return _Seen(info if isinstance(info, dict) else {}, stat.st_ino, stat.st_mtime_ns)


def _write_new(path: Path, content: bytes) -> bool:
    """Create ``path`` holding ``content`` (flushed to the storage); False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _create(path: Path, content: bytes) -> bool:
    """Create ``path`` holding ``content``, atomically, all of it visible at once; False if
    it exists."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    _write_new(tmp, content)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:  # or an NFS retry of a link that succeeded: count the links
            return os.stat(tmp).st_nlink == 2
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            return _write_new(path, content)  # no hard links here; O_EXCL is atomic too
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _remove_if(path: Path, check: Callable[[_Seen], bool]) -> bool:
    """Remove ``path`` if ``check`` accepts it; the check judges the very file removed: it is
    renamed to a private name first (atomic), checked there, and put back if refused."""
    aside = path.with_name(f"{path.name}.aside-{secrets.token_hex(8)}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    seen = _read(aside)
    try:
        if seen is not None and check(seen):
            return True
        try:  # not the version judged: back in place, unless a new lock exists already
            os.link(aside, path)
        except FileExistsError:
            log.warning("%s changed while being removed; its holder lost it", path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            _write_new(path, aside.read_bytes())
        return False
    finally:
        aside.unlink(missing_ok=True)


def _take_breaker(path: Path, give_up: Callable[[], bool]) -> str | None:
    """Hold the breaker lock ``path``; its token, or None once ``give_up()`` (the lock to
    break has changed: another driver broke it) or after :data:`PATIENCE_S`."""
    info = _our_info()
    content = json.dumps(info).encode()
    deadline = time.monotonic() + PATIENCE_S
    while not _create(path, content):
        if give_up() or time.monotonic() > deadline:
            return None
        seen = _read(path)
        if seen is None:
            continue
        age = _fs_now(path.parent) - seen.mtime
        if _gone(seen.info) or age > BREAK_STALE_S:
            _remove_if(path, lambda now, seen=seen: now.identity == seen.identity)
        else:
            time.sleep(_POLL_S)
    return info["token"]


def _stale(seen: _Seen, age: float, stale_after_s: float) -> bool:
    gone = _gone(seen.info)
    return gone if gone is not None else age > stale_after_s


def _gone(info: dict[str, Any]) -> bool | None:
    """Whether the driver named in a lock has ended: True, False (it runs: this machine's
    process with that pid started when the lock says), or None (cannot tell)."""
    pid = info.get("pid")
    if (
        info.get("host") != socket.gethostname()
        or info.get("machine") != _machine()
        or not isinstance(pid, int)
        or isinstance(pid, bool)
        or pid <= 0
    ):
        return None
    alive, start = _process(pid)
    if not alive:
        return True
    if start is None or info.get("process_start") is None:
        return None
    return start != info["process_start"]


def _process(pid: int) -> tuple[bool, str | None]:
    """Whether process ``pid`` is alive (a zombie is not), and its start time where this
    platform tells it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, None
    except PermissionError:
        pass  # another user's process
    try:  # Linux: fields 3 (state) and 22 (start, clock ticks after boot) of /proc/PID/stat
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] not in ("Z", "X"), f"proc:{fields[19]}"
    except (OSError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return True, None
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE, f"psutil:{proc.create_time():.6f}"
    except psutil.NoSuchProcess:
        return False, None
    except psutil.Error:
        return True, None


def _machine() -> str | None:
    """This boot of this machine and this pid namespace (pids mean the same thing within
    it), where Linux tells them."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _our_info() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "token": secrets.token_hex(16),
        "machine": _machine(),
        "process_start": _process(pid)[1],
    }


def _fs_now(directory: Path) -> float:
    """The storage's clock: the mtime of a file created in ``directory`` now (stamped by the
    NFS server, on NFS); this host's clock where nothing can be created there."""
    probe = directory / f"{LOCK_NAME}.now-{secrets.token_hex(8)}"
    try:
        _write_new(probe, b"")
        return os.stat(probe).st_mtime
    except OSError:
        return time.time()
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _one_line(value: Any) -> str:
    return " ".join(str(value).split()) or "?"
