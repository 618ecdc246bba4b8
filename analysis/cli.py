"""``python -m analysis best RESULTS [--top K] [--by COLUMN] [--metric M]`` and
``python -m analysis pareto RESULTS --objective METRIC:MODE --objective METRIC:MODE``."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from analysis._best import best_schedules
from analysis._pareto import pareto
from analysis._tables import ResultsError, load_trials


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one line, like every user mistake
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m analysis", description="Query sweep result tables.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    best = commands.add_parser("best", help="print the best schedules")
    best.add_argument("results", help="a sweep directory (<storage>/<name>) or a storage root")
    best.add_argument("--top", type=int, default=5, help="rows (per group with --by); default 5")
    best.add_argument("--by", help="group by this column, e.g. curriculum.kind")
    best.add_argument("--metric", default="val_accuracy", help="rank by this column")
    best.add_argument("--mode", choices=["max", "min"], default="max")
    best.add_argument("--format", choices=["table", "csv", "json"], default="table")
    front = commands.add_parser("pareto", help="print the trials no other trial dominates")
    front.add_argument("results", help="a sweep directory (<storage>/<name>) or a storage root")
    front.add_argument(
        "--objective", action="append", required=True, metavar="METRIC:MODE",
        help="e.g. val_accuracy:max (at least two)",
    )  # fmt: skip
    front.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return parser


def _objectives(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        metric, _, mode = item.rpartition(":")
        if not metric or mode not in ("max", "min"):
            raise ResultsError(f"--objective {item!r}: expected METRIC:max or METRIC:min")
        out[metric] = mode
    return out


def format_table(df: pd.DataFrame, fmt: str = "table") -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=2)
    shown = df.rename(columns=lambda c: c.removeprefix("config."))
    with pd.option_context("display.width", 200, "display.max_columns", None):
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        trials = load_trials(args.results)
        if args.command == "pareto":
            df = pareto(trials, _objectives(args.objective))
        else:
            df = best_schedules(
                trials, metric=args.metric, mode=args.mode, by=args.by, top=args.top
            )
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(df, args.format))
    return 0
