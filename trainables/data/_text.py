"""UTF-8 text as byte-level token windows (``data.kind: text``).

``data.path`` names a file, a directory (searched recursively for ``*.txt`` and ``*.py``,
skipping hidden folders, ``__pycache__``, ``site-packages`` and ``dist-packages``) or a glob
(``**`` recurses); ``{stdlib}`` in it stands for this Python's standard-library directory,
so an example can train on the standard library's sources, present on every machine. Files
are taken in sorted path order and joined with ``b"\\n"`` into one byte stream; the examples
are its non-overlapping windows of ``data.seq_len`` bytes (token ids 0..255, ``V = 256``, no
padding), all of them or ``data.max_examples`` spread evenly over the stream.

Window offsets come from the files' sizes (``os.stat``), and only the bytes of the chosen
windows are read, so a few thousand windows of the standard library (~30 MB in ~2,000
files) load in a fraction of a second.

A single named file must be non-empty UTF-8. In a directory or glob, empty files and files
that are not UTF-8 text (binary files, other encodings) are left out, and ``check_data``
says which (``DataInfo.notes``, printed by ``validate`` and ``run``).
"""

from __future__ import annotations

import bisect
import codecs
import glob
import os
import sysconfig
from typing import Any

import numpy as np

from trainables.data._base import (
    MIN_ROWS,
    DataError,
    DataInfo,
    Splits,
    evenly,
    seeded_split,
    split_sizes,
)
from trainables.data._rows import IndexRows

STDLIB = "{stdlib}"
VOCAB = 256  # byte-level
TEXT_SUFFIXES = (".txt", ".py")
_SKIPPED_FOLDERS = ("__pycache__", "site-packages", "dist-packages")
_SEPARATOR = ord("\n")
_CHUNK = 1 << 20  # bytes read at a time when checking a file is UTF-8


def text_info(data: Any) -> DataInfo:
    """Check a ``text`` dataset: the files exist, hold enough text, and (a single file) are
    UTF-8. Reads nothing but a single named file's bytes, in chunks."""
    files, sizes, skipped = _text_files(data.path)
    rows = len(evenly(_windows(data, sizes), data.max_examples))
    split_sizes(rows, data.val_fraction, data.test_fraction)
    notes = ()
    if skipped:
        shown = ", ".join(repr(f) for f in skipped[:2]) + (", ..." if len(skipped) > 2 else "")
        notes = (
            f"data.path: {len(skipped)} file(s) that are not UTF-8 text are left out: {shown}",
        )
    pad = VOCAB if data.whole_lines else None
    return DataInfo((data.seq_len,), True, VOCAB, VOCAB, pad, rows, notes)


def load_text(data: Any) -> Splits:
    """The chosen windows as ``(n, seq_len)`` bytes, split by ``data.split_seed``; each split
    an index view gathering int64 ids."""
    files, sizes = text_files(data.path)
    windows = evenly(_windows(data, sizes), data.max_examples)
    base = _read_windows(files, sizes, windows, data.seq_len)
    if data.whole_lines:
        base = whole_lines(base)
    train, val, test = seeded_split(
        len(windows), data.val_fraction, data.test_fraction, data.split_seed
    )
    return Splits(
        x_train=IndexRows(base, train),
        y_train=None,
        x_val=IndexRows(base, val),
        y_val=None,
        x_test=IndexRows(base, test),
        y_test=None,
        num_classes=VOCAB,
        tokens=True,
        vocab_size=VOCAB,
        pad_id=VOCAB if data.whole_lines else None,
    )


def whole_lines(windows: np.ndarray) -> np.ndarray:
    """``data.whole_lines``: each window trimmed to the whole lines in it -- it starts after
    its first newline when that lies in its first half, ends after its last newline (a line
    longer than what is left is kept, cut) -- moved to the front and padded with id 256, so
    sequences have lengths (the ``length`` score) and never start or end mid-line.
    ``(n, L)`` uint8 in, ``(n, L)`` uint16 out."""
    n, length = windows.shape
    newline = windows == _SEPARATOR
    any_newline = newline.any(axis=1)
    first = np.where(any_newline, newline.argmax(axis=1), length)
    start = np.where(first < length // 2, first + 1, 0)
    last = length - 1 - newline[:, ::-1].argmax(axis=1)
    end = np.where(any_newline & (last >= start), last + 1, length)
    positions = np.arange(length)
    keep = positions[None, :] < (end - start)[:, None]
    source = np.minimum(start[:, None] + positions[None, :], length - 1)
    out = np.full((n, length), VOCAB, dtype=np.uint16)
    out[keep] = np.take_along_axis(windows, source, axis=1)[keep]
    return out


def expand(path: str) -> str:
    """``path`` with ``{stdlib}`` replaced by this Python's standard-library directory."""
    return path.replace(STDLIB, sysconfig.get_paths()["stdlib"])


def text_files(path: str) -> tuple[list[str], np.ndarray]:
    """The files ``path`` names, in sorted order, and their sizes in bytes (int64); empty
    files and files that are not UTF-8 text of a directory or glob are left out."""
    files, sizes, _ = _text_files(path)
    return files, sizes


def _text_files(path: str) -> tuple[list[str], np.ndarray, list[str]]:
    """:func:`text_files`, and the non-UTF-8 files of a directory or glob it left out (each
    file decoded once, in chunks: ~0.15 s for the standard library's 32 MB)."""
    given, where = repr(path), expand(path)
    shown = given if where == path else f"{given} ({where})"
    if os.path.isfile(where):
        size = os.stat(where).st_size
        if size == 0:
            raise DataError(f"data.path: {shown} is empty")
        _check_utf8(where, shown)
        return [where], np.array([size], dtype=np.int64), []
    if os.path.isdir(where):
        files = _walk(where)
        missing = f"data.path: {shown} has no text files (*.txt or *.py)"
    elif glob.has_magic(where):
        files = sorted(f for f in glob.glob(where, recursive=True) if os.path.isfile(f))
        missing = f"data.path: {shown} matched no files"
    else:
        raise DataError(
            f"data.path: {shown} does not exist; give a text file, a directory or a glob"
        )
    sizes = np.array([os.stat(f).st_size for f in files], dtype=np.int64)
    kept = sizes > 0
    if not kept.any():
        raise DataError(missing if not files else f"data.path: {shown} holds only empty files")
    files, sizes = [f for f, k in zip(files, kept, strict=True) if k], sizes[kept]
    text = [_is_utf8(f) for f in files]
    if not any(text):
        raise DataError(f"data.path: {shown} holds no UTF-8 text (every file is binary or in "
                        "another encoding)")  # fmt: skip
    skipped = [f for f, t in zip(files, text, strict=True) if not t]
    return [f for f, t in zip(files, text, strict=True) if t], sizes[np.array(text)], skipped


def _walk(root: str) -> list[str]:
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [
            d for d in subfolders if d not in _SKIPPED_FOLDERS and not d.startswith(".")
        ]
        found += [os.path.join(folder, n) for n in names if n.endswith(TEXT_SUFFIXES)]
    return sorted(found)


def _is_utf8(file: str) -> bool:
    try:
        _check_utf8(file, repr(file))
    except DataError:
        return False
    return True


def _check_utf8(file: str, shown: str) -> None:
    """Decode the file in chunks (bounded memory); refuse it at its first invalid byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(file, "rb") as stream:
        while True:
            chunk = stream.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"data.path: {shown} is not UTF-8 text (invalid byte at offset "
                    f"{offset + max(exc.start, 0)})"
                ) from None
            if not chunk:
                return
            offset += len(chunk)


def _windows(data: Any, sizes: np.ndarray) -> int:
    """Windows of ``data.seq_len`` bytes in the joined stream; at least :data:`MIN_ROWS`."""
    total = int(sizes.sum()) + len(sizes) - 1
    windows = total // data.seq_len
    if windows < MIN_ROWS:
        raise DataError(
            f"data.path: {data.path!r} holds {total} bytes of text, {windows} windows of "
            f"data.seq_len {data.seq_len}; need at least {MIN_ROWS} windows "
            f"({MIN_ROWS * data.seq_len} bytes): add text or lower data.seq_len"
        )
    return windows


def _read_windows(
    files: list[str], sizes: np.ndarray, windows: np.ndarray, length: int
) -> np.ndarray:
    """Bytes ``[w * length, (w + 1) * length)`` of the joined stream for each window ``w``
    (sorted), as ``(len(windows), length)`` uint8; reads only those bytes, each file opened
    once. When the windows cover most of the stream, one read of everything is faster."""
    starts = np.cumsum(sizes + 1) - (sizes + 1)  # each file's first byte in the stream
    if len(windows) * length * 2 > int(sizes.sum()):
        stream = b"\n".join(_read(f, 0, int(n)) for f, n in zip(files, sizes, strict=True))
        every = np.frombuffer(stream, np.uint8)[: (len(stream) // length) * length]
        return every.reshape(-1, length)[windows]
    out = np.full((len(windows), length), _SEPARATOR, dtype=np.uint8)
    begins, ends = starts.tolist(), (starts + sizes).tolist()  # plain ints: a fast loop
    current, handle = -1, None
    try:
        for row, first in enumerate((windows * length).tolist()):
            last = first + length
            k = bisect.bisect_right(begins, first) - 1
            while k < len(files) and begins[k] < last:
                lo, hi = max(first, begins[k]), min(last, ends[k])
                if hi > lo:
                    if k != current:
                        if handle is not None:
                            handle.close()
                        current, handle = k, open(files[k], "rb")  # noqa: SIM115
                    handle.seek(lo - begins[k])
                    data = _exact(handle.read(hi - lo), hi - lo, files[k])
                    out[row, lo - first : hi - first] = np.frombuffer(data, np.uint8)
                k += 1
    finally:
        if handle is not None:
            handle.close()
    return out


def _read(file: str, offset: int, size: int) -> bytes:
    with open(file, "rb") as stream:
        stream.seek(offset)
        return _exact(stream.read(size), size, file)


def _exact(data: bytes, size: int, file: str) -> bytes:
    """``data`` if it holds the ``size`` bytes asked for (the file has not shrunk since it
    was listed)."""
    if len(data) != size:
        raise DataError(f"data.path: {file!r} changed while it was read; load again")
    return data
