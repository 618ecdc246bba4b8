from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class ResultsError(ValueError):
    """The results path holds no readable table of the requested kind."""


def _table_files(results: str | os.PathLike, table: str) -> list[Path]:
    root = Path(results)
    if not root.is_dir():
        raise ResultsError(f"results: {str(root)!r} is not a directory")
    # One sweep (<root>/<table>/) or a storage root with several (<root>/<sweep>/<table>/).
    files = sorted(root.glob(f"{table}/*.parquet")) or sorted(root.glob(f"*/{table}/*.parquet"))
    # Hidden files are in-flight temporaries of the writer, never complete.
    return [f for f in files if not f.name.startswith((".", "_"))]


def _load(results: str | os.PathLike, table: str) -> pa.Table:
    files = _table_files(results, table)
    if not files:
        raise ResultsError(f"results: no {table!r} table under {str(results)!r}")
    tables = [pq.read_table(f) for f in files]
    # Sweeps may have different config columns: missing columns become nulls.
    return pa.concat_tables(tables, promote_options="default")


def load_trials(results: str | os.PathLike) -> pa.Table:
    """The ``trials`` table: one row per finished or failed trial."""
    return _load(results, "trials")


def load_curves(results: str | os.PathLike) -> pa.Table:
    """The ``curves`` table: one row per report of every trial."""
    return _load(results, "curves")


def load_teacher(results: str | os.PathLike) -> pa.Table:
    """The ``teacher`` table: one row per teacher evaluation."""
    return _load(results, "teacher")
