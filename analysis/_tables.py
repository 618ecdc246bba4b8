from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WAL_PREFIX = "_wal-"  # the sink's write-ahead logs: hidden from Parquet readers


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


def read_wal(curves_dir: Path) -> list[dict]:
    """Curve rows in the sink's write-ahead logs: rows a running sweep has not yet written to
    Parquet, or a killed one never did (until its next run recovers them)."""
    rows = []
    for path in sorted(Path(curves_dir).glob(f"{WAL_PREFIX}*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by the kill
                continue
    return rows


def load_curves(results: str | os.PathLike) -> pa.Table:
    """The ``curves`` table: one row per report of every trial, including rows still only in
    a write-ahead log (a running or killed sweep)."""
    root = Path(results)
    pending = [row for d in [root / "curves", *root.glob("*/curves")] for row in read_wal(d)]
    if not _table_files(results, "curves") and pending:
        return pa.Table.from_pylist(pending)
    table = _load(results, "curves")
    if not pending:
        return table
    keys = zip(table["sweep"].to_pylist(), table["trial_id"].to_pylist(),
               table["step"].to_pylist(), strict=True)  # fmt: skip
    seen = set(keys)
    extra = [r for r in pending if (r["sweep"], r["trial_id"], r["step"]) not in seen]
    if not extra:
        return table
    return pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])


def load_teacher(results: str | os.PathLike) -> pa.Table:
    """The ``teacher`` table: one row per teacher evaluation."""
    return _load(results, "teacher")


def load_stages(results: str | os.PathLike) -> pa.Table:
    """The ``stages`` table: one row per curriculum stage of every finished or failed trial."""
    return _load(results, "stages")
