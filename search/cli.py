"""``python -m search validate|run|submit|teacher SPEC [--set a.b=value ...]`` and
``python -m search confirm SWEEP_DIR [--top N] [--seeds S]``.

``confirm`` re-runs a finished sweep's ``--top`` best searched configurations (selected on
validation) and its baseline arms on ``--seeds`` fresh seeds, into ``<sweep>/confirm/``, and
prints their comparison on the test split (intervals, Holm-corrected verdicts): the winner's
score without the selection's luck (see :mod:`search.confirm`).

Exit codes: 0 success, 2 bad input (one line per problem, nothing started), 1 a sweep that
started but failed (a teacher that failed, a full or read-only disk), 130 interrupted (Ctrl-C:
the same command resumes the sweep, or the confirmation).
"""

from __future__ import annotations

import argparse
import sys

from analysis.cli import Parser
from search._inputs import InputError, check_inputs
from search.spec import SpecError, SweepSpec, load_spec, redact

INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m search", description="Search distillation schedules.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, help_text in [
        ("validate", "check a spec"),
        ("run", "run a sweep, or resume it if <storage>/<name> holds one from the same spec"),
        ("submit", "run a sweep as a Ray Job on a cluster (--address http://HEAD:8265)"),
        (
            "teacher",
            "train the spec's teacher and build its bank ahead of sweeps (or reuse "
            "them); prints the bank's directory",
        ),
    ]:
        cmd = commands.add_parser(name, help=help_text)
        cmd.add_argument("spec", help="sweep spec (YAML)")
        cmd.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a spec field, e.g. --set student.optim.steps=300 (repeatable)",
        )  # fmt: skip
        cmd.add_argument("--storage", help="results root (overrides the spec's storage)")
        cmd.add_argument("--name", help="sweep name (overrides the spec's name)")
        if name == "submit":
            cmd.add_argument(
                "--address", required=True, help="the Ray Jobs server, e.g. http://HEAD:8265"
            )
            cmd.add_argument(
                "--python", default="python",
                help="the interpreter on the head that runs the job (default: `python` on "
                "the head's PATH); checked for the project's dependencies before submitting",
            )  # fmt: skip
            cmd.add_argument(
                "--wait", action="store_true",
                help="follow the job to its end, streaming its logs: exit 0 if it succeeded, "
                "1 if it failed or was stopped",
            )  # fmt: skip
        if name in ("run", "teacher"):
            cmd.add_argument(
                "--address",
                help="Ray cluster address; default: RAY_ADDRESS, else embedded local Ray",
            )
            cmd.add_argument(
                "--verbose", action="store_true", help="also show Tune's progress tables"
            )
        if name == "run":
            cmd.add_argument(
                "--top", type=int, default=5, help="best schedules to print; default 5"
            )
    confirm = commands.add_parser(
        "confirm",
        help="re-run a sweep's best configurations and its baselines on fresh seeds and "
        "compare them on the test split (run it again to resume or extend it)",
    )
    confirm.add_argument("sweep", help="the sweep's directory, <storage>/<name>")
    confirm.add_argument(
        "--top", type=int, default=3,
        help="searched configurations to confirm, best on validation first; default 3",
    )  # fmt: skip
    confirm.add_argument(
        "--seeds", type=int, default=5, help="fresh seeds per configuration (2 or more); default 5"
    )
    confirm.add_argument(
        "--address", help="Ray cluster address; default: RAY_ADDRESS, else embedded local Ray"
    )
    confirm.add_argument("--verbose", action="store_true", help="also show Tune's progress tables")
    return parser


def _spec(args: argparse.Namespace) -> SweepSpec:
    overrides = list(args.overrides)
    if args.storage is not None:
        overrides.append(f"storage={args.storage}")
    if args.name is not None:
        overrides.append(f"name={args.name}")
    return load_spec(args.spec, overrides)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C outside a sweep's own handling (loading, printing)
        print("interrupted; run the same command to resume", file=sys.stderr)
        return INTERRUPTED


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "confirm":
        return _confirm(args)
    try:
        spec = _spec(args)
        if args.command not in ("run", "teacher"):  # those check it themselves, first thing
            # a bad file or model fails here, not in a trial; a submitted sweep's own code
            # (a module factory, transformers) may exist only on the cluster: checked there
            check_inputs(spec, own_code=args.command != "submit")
    except SpecError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except InputError as exc:
        _problems(exc)
        return 2
    if args.command == "validate":
        print(f"ok: {args.spec} is a valid sweep spec ({spec.num_samples} trials)")
        for note in spec.space_notes():
            print(f"note: {note}")
        return 0
    if args.command == "submit":
        return _submit(spec, args)
    if args.command == "teacher":
        return _teacher(spec, args)
    return _run(spec, args)


def _teacher(spec: SweepSpec, args: argparse.Namespace) -> int:
    from search.sweep import SweepInputError, SweepInterrupted, build_teacher
    from search.teacher import TeacherError

    try:
        bank = build_teacher(spec, address=args.address, verbose=1 if args.verbose else 0)
    except SweepInputError as exc:
        _problems(exc)
        return 2
    except (TeacherError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SweepInterrupted as exc:
        print(exc, file=sys.stderr)
        return INTERRUPTED
    print(f"teacher bank: {bank}")
    return 0


def _problems(exc: Exception) -> None:
    """One ``error:`` line per problem (an input error may name several, one per line)."""
    for line in str(exc).splitlines():
        print(f"error: {line}", file=sys.stderr)


def _submit(spec: SweepSpec, args: argparse.Namespace) -> int:
    from search.errors import SweepInputError
    from search.submit import follow_job, submit

    try:
        job = submit(spec, args.address, python=args.python)
    except SweepInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = redact(args.address)
    print(f"submitted sweep {spec.name!r} as job {job}; follow it with:")
    print(f"  ray job logs --follow {job} --address {shown}")
    print(f"  ray job status {job} --address {shown}", flush=True)
    if not args.wait:
        return 0
    try:
        end = follow_job(args.address, job, write=lambda text: print(text, end="", flush=True))
    except SweepInputError as exc:  # the Jobs server went away meanwhile
        print(f"error: {exc}; the job may still run: ray job status {job}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stopped following job {job}, which goes on; end it with: ray job stop {job} "
              f"--address {shown}", file=sys.stderr)  # fmt: skip
        return INTERRUPTED
    if end.status == "SUCCEEDED":
        print(f"job {job} succeeded")
        return 0
    reason = f": {redact(end.message)}" if end.message else ""
    print(f"error: job {job} {end.status}{reason}; its last log lines:", file=sys.stderr)
    for line in end.tail:
        print(f"  {redact(line)}", file=sys.stderr)
    return 1


def _drive(call):
    """Run a driver (a sweep, a confirmation): ``(its result, None)``, or ``(None, the exit
    code)`` once its failure is printed: 2 bad input (one line per problem, or a damaged
    results file to move), 1 a failure after it started, 130 interrupted."""
    from analysis import CorruptResultsError
    from search.errors import SweepInputError
    from search.sweep import SweepInterrupted, SweepLockLost, SweepStorageError
    from search.teacher import TeacherError

    try:
        return call(), None
    except (SweepInputError, CorruptResultsError) as exc:  # a damaged results file: move it
        _problems(exc)
        return None, 2
    except (TeacherError, SweepStorageError, SweepLockLost) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 1
    except SweepInterrupted as exc:
        print(exc, file=sys.stderr)
        return None, INTERRUPTED


def _run(spec: SweepSpec, args: argparse.Namespace) -> int:
    from analysis import CorruptResultsError, ResultsError, best_schedules, load_trials, split_of
    from analysis.cli import format_table
    from search.sweep import run_sweep

    verbose = 1 if args.verbose else 0
    sweep_dir, code = _drive(lambda: run_sweep(spec, address=args.address, verbose=verbose))
    if code is not None:
        return code
    try:
        trials = load_trials(sweep_dir)
        metric, mode = spec.selection
        best = best_schedules(trials, metric=metric, mode=mode, top=args.top)
    except CorruptResultsError as exc:  # damaged after the run wrote it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ResultsError as exc:  # every trial failed, or was stopped (budget)
        print(f"error: no best schedules: {exc}; stopped trials run again if you run the "
              "same command again", file=sys.stderr)  # fmt: skip
        return 1
    print(f"\nbest schedules by {metric} ({mode}, {split_of(metric)} split) ({sweep_dir}):")
    print(format_table(best))
    return 0


def _confirm(args: argparse.Namespace) -> int:
    from analysis import CorruptResultsError, ResultsError
    from analysis.cli import format_table
    from search.confirm import comparison, confirm_sweep

    verbose = 1 if args.verbose else 0
    _, code = _drive(
        lambda: confirm_sweep(
            args.sweep, top=args.top, seeds=args.seeds, address=args.address, verbose=verbose
        )
    )
    if code is not None:
        return code
    try:
        header, table = comparison(args.sweep)
    except CorruptResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ResultsError as exc:  # e.g. every run of the baseline failed
        print(f"error: no comparison: {exc}", file=sys.stderr)
        return 1
    print(f"\n{header}")
    print(format_table(table))
    return 0
