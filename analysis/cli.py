"""``python -m analysis best | compare | pareto | report RESULTS ...``.

Exit codes: 0 success, 2 bad input (a path without results, an unknown column, a damaged
result file: named, with what to do), one line each.
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from analysis._best import best_schedules, displayable, plain
from analysis._compare import compare
from analysis._pareto import pareto
from analysis.tables import ResultsError, config_path, load_trials

FORMATS = ["table", "csv", "json"]


class Parser(argparse.ArgumentParser):
    """The parser of both CLIs (``python -m search``, ``python -m analysis``): a usage error
    exits with code 2 and one line, like every user mistake."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m analysis", description="Query sweep result tables.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    where = "a sweep directory (<storage>/<name>) or a storage root"

    best = commands.add_parser("best", help="print the best schedules")
    best.add_argument("results", help=where)
    best.add_argument("--top", type=int, default=5, help="rows (per group with --by); default 5")
    best.add_argument("--by", help="group by this column, e.g. curriculum.kind")
    best.add_argument("--metric", default="val_accuracy", help="rank by this column")
    best.add_argument(
        "--mode", choices=["max", "min"],
        help="default: min for losses, perplexities, steps and times, else max",
    )  # fmt: skip
    best.add_argument("--format", choices=FORMATS, default="table")

    cmp = commands.add_parser("compare", help="arms against a baseline, with bootstrap CIs")
    cmp.add_argument("results", help=where)
    cmp.add_argument("--baseline", default="baseline:oneshot", help="the baseline arm's value")
    cmp.add_argument("--by", default="arm", help="what an arm is (a column); default arm")
    cmp.add_argument("--metric", default="test_accuracy", help="reported metric")
    cmp.add_argument("--mode", choices=["max", "min"], default="max")
    cmp.add_argument(
        "--select", default="val_accuracy",
        help="pick each arm's best trial by this column ('none': pool all its trials)",
    )  # fmt: skip
    cmp.add_argument("--format", choices=FORMATS, default="table")

    front = commands.add_parser("pareto", help="print the trials no other trial dominates")
    front.add_argument("results", help=where)
    front.add_argument(
        "--objective", action="append", required=True, metavar="METRIC:MODE",
        help="e.g. val_accuracy:max (at least two)",
    )  # fmt: skip
    front.add_argument("--format", choices=FORMATS, default="table")

    report = commands.add_parser("report", help="write a self-contained HTML report")
    report.add_argument("results", help=where)
    report.add_argument("-o", "--output", default="report.html", help="default report.html")
    report.add_argument("--baseline", help="arm to compare against; default baseline:oneshot")
    return parser


def format_table(df: pd.DataFrame, fmt: str = "table") -> str:
    """``df`` as an aligned text table (config columns by their dotted path), CSV or JSON
    records. List and struct cells are JSON text in a table or CSV, nested JSON in JSON;
    nulls are empty in CSV and ``null`` in JSON."""
    if fmt == "json":
        records = [{k: plain(v) for k, v in row.items()} for row in df.to_dict("records")]
        return json.dumps(records, indent=2, default=str)
    if fmt == "csv":
        return displayable(df).to_csv(index=False)
    shown = displayable(df).rename(columns=lambda c: config_path(c) or c)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _objectives(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        metric, _, mode = item.rpartition(":")
        if not metric or mode not in ("max", "min"):
            raise ResultsError(f"--objective {item!r}: expected METRIC:max or METRIC:min")
        out[metric] = mode
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            from analysis._report import render_report

            out = render_report(args.results, args.output, baseline=args.baseline)
            print(f"wrote {out}")
            return 0
        trials = load_trials(args.results)
        if args.command == "pareto":
            df = pareto(trials, _objectives(args.objective))
        elif args.command == "compare":
            select = None if args.select == "none" else args.select
            df = compare(
                trials, baseline=args.baseline, by=args.by, metric=args.metric, mode=args.mode,
                select=select,
            )  # fmt: skip
        else:
            df = best_schedules(
                trials, metric=args.metric, mode=args.mode, by=args.by, top=args.top
            )
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(df, args.format))
    return 0
