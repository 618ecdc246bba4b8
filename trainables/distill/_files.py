"""Checked files: written under a hidden name and renamed into place, read only after their
size and SHA-256 match what was recorded when they were written.

The teacher's run directory, the bank's shards and manifest, and the cross-fitted fold scores
all use these, so that a reader never sees a torn file and a damaged one is detected, never
read silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa

# Files this process has checked: (path, device, inode, size, mtime_ns, expected sha256).
_VERIFIED: set[tuple[str, int, int, int, int, str]] = set()


class BankCorruptError(ValueError):
    """A file of a teacher bank is missing, truncated or changed since the bank was written.

    ``path`` is the file, ``problem`` what is wrong with it, ``bank`` the bank's directory.
    """

    def __init__(self, path: str | os.PathLike, problem: str, bank: str | os.PathLike) -> None:
        self.path, self.problem, self.bank = Path(path), problem, Path(bank)
        super().__init__(
            f"teacher bank file {self.path} is {problem}; run the sweep (or `python -m search "
            f"teacher`) again to rebuild it, or delete {self.bank}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (Ray ships a trial's error) with its fields
        return type(self), (self.path, self.problem, self.bank)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (about 1 GB/s on one core)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def json_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def hidden_twin(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (``.<name>.<token>``) for a file or directory that
    is renamed into place once whole; readers never look at hidden names."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}"


def make_hidden_dir(final: Path) -> Path:
    """A new hidden directory beside ``final``, made by a plain ``mkdir`` so that it gets the
    umask's mode like any other directory (``tempfile.mkdtemp`` would make it 0o700)."""
    while True:
        tmp = hidden_twin(final)
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | pa.Table) -> dict[str, Any]:
    """Write ``data`` (bytes, or a table as Arrow IPC) to a hidden twin of ``path``, flush it
    to disk and rename it into place; returns its record ``{"size", "sha256"}``."""
    tmp = hidden_twin(path)
    try:
        if isinstance(data, pa.Table):
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, data.schema) as writer:
                writer.write_table(data)
        else:
            tmp.write_bytes(data)
        _sync(tmp)
        record = {"size": tmp.stat().st_size, "sha256": sha256_file(tmp)}
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return record


def read_ipc(path: Path) -> pa.Table:
    """An Arrow IPC file, memory-mapped (no copy)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def checked(root: Path, name: str, files: dict[str, dict[str, Any]], bank: Path) -> Path:
    """``root / name`` once it matches its size and checksum in ``files``; hashed only the
    first time this process sees the file unchanged (same inode, size and mtime), so call it
    before every read. :class:`BankCorruptError` (naming ``bank``) if it does not match."""
    path = root / name
    record = files.get(name)
    if record is None:
        raise BankCorruptError(path, "not listed in the manifest", bank)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise BankCorruptError(path, "missing", bank) from None
    key = (str(path.absolute()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns,
           record["sha256"])  # fmt: skip
    if key in _VERIFIED:
        return path
    if stat.st_size != record["size"]:
        what = "truncated" if stat.st_size < record["size"] else "corrupt"
        raise BankCorruptError(
            path, f"{what} ({stat.st_size} bytes, {record['size']} written)", bank
        )
    if sha256_file(path) != record["sha256"]:
        raise BankCorruptError(path, "corrupt (checksum mismatch)", bank)
    _VERIFIED.add(key)
    return path


def write_json(path: Path, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` plus its own checksum (``meta_sha256``), written atomically; returns what a
    reader will see."""
    body = json.loads(json.dumps(body))  # as a reader will see it (tuples become lists)
    body["meta_sha256"] = json_sha256(body)
    write_atomic(path, json.dumps(body, indent=1).encode())
    return body


def read_json(path: Path, bank: Path, fmt: int) -> dict[str, Any]:
    """A file of :func:`write_json`, checked against its own checksum and format.
    ``FileNotFoundError`` if absent; :class:`BankCorruptError` if damaged or of another
    format."""
    text = path.read_bytes()  # FileNotFoundError: the caller says what is missing
    try:
        body = json.loads(text)
    except ValueError:  # not UTF-8 or not JSON
        raise BankCorruptError(path, "corrupt (not valid JSON)", bank) from None
    if not isinstance(body, dict):
        raise BankCorruptError(path, "corrupt (not a JSON object)", bank)
    if body.get("format") != fmt:
        raise BankCorruptError(
            path, f"of format {body.get('format')!r}, and this version reads format {fmt}", bank
        )
    if body.get("meta_sha256") != json_sha256(
        {k: v for k, v in body.items() if k != "meta_sha256"}
    ):
        raise BankCorruptError(path, "corrupt (checksum mismatch)", bank)
    return body
