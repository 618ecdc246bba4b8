"""The teacher bank: the teacher's logits at each kept checkpoint on every split, stored once
and memory-mapped by every student, plus per-example difficulty scores.

Layout of a bank directory::

    <dir>/step-<step:09d>/{train,val,test}.arrow  Arrow IPC, column ``logits``:
                                                  fixed_size_list<float32>, one row per
                                                  example (``shape`` values: ``[classes]``,
                                                  or ``[positions, vocab]`` per token)
    <dir>/scores.arrow                             per training example, one float64 column
                                                  per score
    <dir>/meta.json                                {"format", "step", "checkpoints",
                                                  "num_classes", "shape", "metrics", "history",
                                                  "transition", "files", "meta_sha256"}

A bank is built under a hidden temporary name beside its final place and renamed into place
once complete, so a reader never sees a half-written one: if ``meta.json`` is there, so is
everything else. A build that dies (even by SIGKILL) leaves at most a hidden ``.<name>.*``
directory, which no reader looks at. Directories and files get the modes of a plain
``mkdir`` / ``open`` under the process's umask.

``meta.json`` records the size and SHA-256 of every other file of the bank (``files``, keyed
by the path relative to the bank) and the SHA-256 of its own contents (``meta_sha256``). A
reader checks a file before it first memory-maps it in this process; later reads of the same,
unchanged file (same inode, size and mtime) in the same process cost one ``stat``. A file
that is missing, truncated or altered raises :class:`BankCorruptError` naming it, so a damaged
bank is never read silently. :func:`verify_bank` checks every file at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SPLITS = ("train", "val", "test")
FORMAT = 3  # 3: checksums in meta.json
META = "meta.json"
SCORES = "scores.arrow"

# Files this process has checked: (path, device, inode, size, mtime_ns, expected sha256).
_VERIFIED: set[tuple[str, int, int, int, int, str]] = set()


class BankCorruptError(ValueError):
    """A file of a teacher bank is missing, truncated or changed since the bank was written.

    ``path`` is the file, ``problem`` what is wrong with it, ``bank`` the bank's directory.
    """

    def __init__(self, path: str | os.PathLike, problem: str, bank: str | os.PathLike) -> None:
        self.path, self.problem, self.bank = Path(path), problem, Path(bank)
        super().__init__(
            f"teacher bank file {self.path} is {problem}; delete {self.bank} to rebuild it"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (Ray ships a trial's error) with its fields
        return type(self), (self.path, self.problem, self.bank)


def _write_ipc(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read_ipc(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:09d}"


def _split_file(step: int, split: str) -> str:
    return f"step-{step:09d}/{split}.arrow"


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (about 1 GB/s on one core)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _meta_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _make_hidden_dir(final: Path) -> Path:
    """A new hidden directory beside ``final``, made by a plain ``mkdir`` so that it gets the
    umask's mode like any other directory (``tempfile.mkdtemp`` would make it 0o700)."""
    while True:
        tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


class BankWriter:
    """Builds a bank in a temporary directory; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block with an exception removes the temporary
    directory and leaves nothing at the final path.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.final = Path(directory)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _make_hidden_dir(self.final)
        self.checkpoints: list[int] = []
        self.num_classes: int | None = None
        self.shape: list[int] | None = None  # one example's outputs: [classes] or [L, vocab]

    def __enter__(self) -> BankWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary build, if it was not committed."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_checkpoint(self, step: int, logits: dict[str, np.ndarray]) -> None:
        """Store one checkpoint's logits for each split: ``(n, classes)``, or ``(n, positions,
        vocab)`` for the language-model tasks (dense; the same shape in every split)."""
        if set(logits) != set(SPLITS):
            raise ValueError(f"logits must have exactly the splits {SPLITS}, got {sorted(logits)}")
        if self.checkpoints and step <= self.checkpoints[-1]:
            raise ValueError(f"checkpoints must be added in increasing step order, got {step}")
        directory = _checkpoint_dir(self.tmp, step)
        directory.mkdir()
        for split, array in logits.items():
            array = np.ascontiguousarray(array, dtype=np.float32)
            self.num_classes, self.shape = array.shape[-1], list(array.shape[1:])
            width = int(np.prod(array.shape[1:]))
            column = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), width)
            _write_ipc(directory / f"{split}.arrow", pa.table({"logits": column}))
        self.checkpoints.append(int(step))

    def commit(
        self,
        *,
        metrics: dict[str, float],
        history: list[dict[str, Any]] = (),
        scores: dict[str, np.ndarray] | None = None,
        transition: dict[str, Any] | None = None,
    ) -> Path:
        """Write the scores and metadata and move the bank into place (the last checkpoint is
        the final teacher). If another builder got there first, its bank is kept."""
        if not self.checkpoints:
            raise ValueError("a bank needs at least one checkpoint")
        table = pa.table({k: np.asarray(v, dtype=np.float64) for k, v in (scores or {}).items()})
        _write_ipc(self.tmp / SCORES, table)
        files = {  # every file in the build, including any a caller added (teacher.pt)
            path.relative_to(self.tmp).as_posix(): {
                "size": path.stat().st_size,
                "sha256": _sha256(path),
            }
            for path in sorted(self.tmp.rglob("*"))
            if path.is_file() and path != self.tmp / META
        }
        meta = {
            "format": FORMAT,
            "step": self.checkpoints[-1],
            "checkpoints": self.checkpoints,
            "num_classes": self.num_classes,
            "shape": self.shape,
            "metrics": metrics,
            "history": list(history),
            "transition": transition,
            "files": files,
        }
        meta = json.loads(json.dumps(meta))  # as a reader will see it (tuples become lists)
        meta["meta_sha256"] = _meta_sha256(meta)
        (self.tmp / META).write_text(json.dumps(meta, indent=2))
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not bank_complete(self.final):
                raise
        return self.final


@dataclass
class TeacherBank:
    """A bank opened for reading. ``logits`` are the final teacher's, ``(n, *shape)`` float32
    per split (``shape``: ``[classes]``, or ``[positions, vocab]`` for the language-model
    tasks), memory-mapped; :meth:`checkpoint_logits` memory-maps any kept checkpoint."""

    logits: dict[str, np.ndarray]
    step: int
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    scores: dict[str, np.ndarray]  # per training example, higher = harder
    checkpoints: list[int] = field(default_factory=list)
    transition: dict[str, Any] | None = None
    directory: Path | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # meta.json's checksums
    shape: tuple[int, ...] = ()  # one example's outputs

    @property
    def num_classes(self) -> int:
        return int(self.logits["train"].shape[-1])

    def checkpoint_logits(self, step: int) -> dict[str, np.ndarray]:
        """A kept checkpoint's logits per split (each file checked on its first read here)."""
        if step not in self.checkpoints or self.directory is None:
            raise ValueError(
                f"teacher checkpoint {step} is not in the bank; kept: {self.checkpoints}"
            )
        return _read_checkpoint(self.directory, step, self.files, self.shape)


def _checked(bank: Path, name: str, files: dict[str, dict[str, Any]]) -> Path:
    """``bank / name`` once it matches its size and checksum in ``files``; hashed only the
    first time this process sees the file unchanged, so call it before every read."""
    path = bank / name
    record = files.get(name)
    if record is None:
        raise BankCorruptError(path, "not listed in meta.json", bank)
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
    if _sha256(path) != record["sha256"]:
        raise BankCorruptError(path, "corrupt (checksum mismatch)", bank)
    _VERIFIED.add(key)
    return path


def _read_checkpoint(
    directory: Path, step: int, files: dict[str, dict[str, Any]], shape: tuple[int, ...] = ()
) -> dict[str, np.ndarray]:
    out = {}
    for split in SPLITS:
        path = _checked(directory, _split_file(step, split), files)
        column = _read_ipc(path).column("logits").combine_chunks()
        out[split] = column.values.to_numpy().reshape(len(column), *(shape or (-1,)))
    return out


def write_bank(
    directory: str | os.PathLike,
    logits: dict[str, np.ndarray],
    *,
    step: int,
    metrics: dict[str, float],
    history: list[dict[str, Any]] = (),
    scores: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a bank holding a single (final) checkpoint, atomically."""
    with BankWriter(directory) as writer:
        writer.add_checkpoint(step, logits)
        return writer.commit(metrics=metrics, history=history, scores=scores)


def _read_meta(bank: Path) -> dict[str, Any]:
    """``meta.json``, checked against its own checksum."""
    path = bank / META
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        missing = f"teacher outputs {str(bank)!r} are missing or incomplete"
        raise FileNotFoundError(missing) from None
    try:
        meta = json.loads(text)
    except ValueError:  # not UTF-8 or not JSON
        raise BankCorruptError(path, "corrupt (not valid JSON)", bank) from None
    if not isinstance(meta, dict):
        raise BankCorruptError(path, "corrupt (not a JSON object)", bank)
    if meta.get("format") != FORMAT:
        raise BankCorruptError(
            path, f"of format {meta.get('format')!r}, and this version reads format {FORMAT}", bank
        )
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    if meta.get("meta_sha256") != _meta_sha256(body):
        raise BankCorruptError(path, "corrupt (checksum mismatch)", bank)
    return meta


def verify_bank(directory: str | os.PathLike) -> None:
    """Check every file of a bank against ``meta.json`` (a file already checked by this
    process and unchanged since is not read again).

    Raises ``FileNotFoundError`` if there is no bank (no ``meta.json``) and
    :class:`BankCorruptError`, naming the first bad file, if the bank is damaged.
    """
    bank = Path(directory)
    meta = _read_meta(bank)
    for name in meta["files"]:
        _checked(bank, name, meta["files"])


def bank_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a whole, intact bank of this version (:func:`verify_bank`)."""
    try:
        verify_bank(directory)
    except (FileNotFoundError, BankCorruptError):
        return False
    return True


def open_bank(directory: str | os.PathLike) -> TeacherBank:
    """Open a bank: memory-maps the final logits and the scores (no copy on read), each file
    checked first (see the module's docstring).

    Raises ``FileNotFoundError`` if there is no bank, :class:`BankCorruptError` if a file it
    reads is damaged.
    """
    directory = Path(directory)
    meta = _read_meta(directory)
    files = meta["files"]
    shape = tuple(meta.get("shape") or (meta["num_classes"],))
    scores_table = _read_ipc(_checked(directory, SCORES, files))
    return TeacherBank(
        logits=_read_checkpoint(directory, meta["step"], files, shape),
        step=meta["step"],
        metrics=meta["metrics"],
        history=meta["history"],
        scores={name: scores_table.column(name).to_numpy() for name in scores_table.column_names},
        checkpoints=meta["checkpoints"],
        transition=meta["transition"],
        directory=directory,
        files=files,
        shape=shape,
    )
