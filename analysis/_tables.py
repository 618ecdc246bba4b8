from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

WAL_PREFIX = "_wal-"  # the sink's write-ahead logs: hidden from Parquet readers


class ResultsError(ValueError):
    """The results path holds no readable table of the requested kind."""


def table_files(results: str | os.PathLike, table: str) -> list[Path]:
    root = Path(results)
    if not root.is_dir():
        raise ResultsError(f"results: {str(root)!r} is not a directory")
    # One sweep (<root>/<table>/) or a storage root with several (<root>/<sweep>/<table>/).
    files = sorted(root.glob(f"{table}/*.parquet")) or sorted(root.glob(f"*/{table}/*.parquet"))
    # Hidden files are in-flight temporaries of the writer, never complete.
    files = [f for f in files if not f.name.startswith((".", "_"))]
    # A run's files (<kind>-<run>-...) that its compact-<run> file already holds are being
    # deleted by the sink: read the compact file only.
    compacted = {
        (f.parent, f.stem.removeprefix("compact-")) for f in files if f.name.startswith("compact-")
    }
    return [f for f in files if (f.parent, _run_token(f)) not in compacted]


def _run_token(path: Path) -> str | None:
    parts = path.stem.split("-")
    return parts[1] if len(parts) >= 3 and parts[0] in ("part", "trial", "stage") else None


def _load(results: str | os.PathLike, table: str, files: list[Path] | None = None) -> pa.Table:
    files = table_files(results, table) if files is None else files
    if not files:
        raise ResultsError(f"results: no {table!r} table under {str(results)!r}")
    by_sweep: dict[Path, list[Path]] = {}
    for f in files:
        by_sweep.setdefault(f.parent, []).append(f)
    # One dataset scan per sweep (threaded, fast over thousands of small files), on the schema
    # of its first and last file (a sweep resumed by a newer version may have grown columns:
    # missing ones read as nulls). Sweeps may differ in config columns: concat promotes.
    tables = []
    for group in by_sweep.values():
        schema = pa.unify_schemas([pq.read_schema(group[0]), pq.read_schema(group[-1])])
        tables.append(ds.dataset(group, schema=schema, format="parquet").to_table())
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
    files = table_files(results, "curves")
    if not files and pending:
        return pa.Table.from_pylist(pending)
    table = _load(results, "curves", files)
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
