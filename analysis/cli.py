"""``python -m analysis best | compare | pareto | report RESULTS ...``.

Exit codes: 0 success, 2 bad input (a path without results, an unknown column, a damaged
result file: named, with what to do), one line each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import pandas as pd

from analysis._best import best_schedules, displayable, plain
from analysis._compare import compare_results
from analysis._pareto import pareto
from analysis.tables import ResultsError, config_path, load_trials

FORMATS = ["table", "csv", "json"]
_MODE_HELP = (
    "default: the direction the sweep searched it in, else min for losses, perplexities, "
    "steps and times, max otherwise"
)


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
    best.add_argument(
        "--metric", help="rank by this column; default the sweep's metric (else val_accuracy)"
    )
    best.add_argument("--mode", choices=["max", "min"], help=_MODE_HELP)
    best.add_argument("--format", choices=FORMATS, default="table")

    cmp = commands.add_parser(
        "compare", help="arms against a baseline: intervals, Welch tests, Holm-corrected verdicts"
    )
    cmp.add_argument("results", help=where)
    cmp.add_argument(
        "--baseline", help="the baseline arm's value; default baseline:oneshot where it finished"
    )
    cmp.add_argument("--by", default="arm", help="what an arm is (a column); default arm")
    cmp.add_argument(
        "--metric",
        help="reported metric; default test_accuracy (test_perplexity for a language model)",
    )
    cmp.add_argument("--mode", choices=["max", "min"], help=f"of --metric; {_MODE_HELP}")
    cmp.add_argument(
        "--select", default="searched",
        help="pick each arm's best trial by this column; default the sweep's metric (else "
        "val_accuracy); 'none': pool all its trials",
    )  # fmt: skip
    cmp.add_argument("--select-mode", choices=["max", "min"], help=f"of --select; {_MODE_HELP}")
    cmp.add_argument(
        "--rows", choices=["auto", "confirm", "search"], default="auto",
        help="the confirmation runs' rows (python -m search confirm) or the search's; default "
        "the confirmation's where there are some",
    )  # fmt: skip
    cmp.add_argument("--format", choices=FORMATS, default="table")

    front = commands.add_parser("pareto", help="print the trials no other trial dominates")
    front.add_argument("results", help=where)
    front.add_argument(
        "--objective", action="append", required=True, metavar="METRIC[:MODE]",
        help="e.g. val_accuracy:max (at least two); without :MODE, the direction the sweep "
        "searched it in, else min for losses, steps and times, max otherwise",
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
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


def _objectives(items: list[str]) -> dict[str, str | None]:
    out = {}
    for item in items:
        metric, colon, mode = item.rpartition(":")
        if not colon:
            metric, mode = item, None
        if not metric or mode not in ("max", "min", None):
            raise ResultsError(f"--objective {item!r}: expected METRIC, METRIC:max or METRIC:min")
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
        if args.command == "compare":
            select = None if args.select == "none" else args.select
            df = compare_results(
                args.results, baseline=args.baseline, rows=args.rows, by=args.by,
                metric=args.metric, mode=args.mode, select=select, select_mode=args.select_mode,
            )  # fmt: skip
            text = format_table(df, args.format)
            if args.format == "table":
                text = f"{df.attrs['summary']}\n{text}"
        else:
            trials = load_trials(args.results)
            if args.command == "pareto":
                df = pareto(trials, _objectives(args.objective))
            else:
                df = best_schedules(
                    trials, metric=args.metric, mode=args.mode, by=args.by, top=args.top
                )
            text = format_table(df, args.format)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
