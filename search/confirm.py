"""Confirm a sweep's winners on fresh seeds (``python -m search confirm SWEEP``).

Choosing the best of K searched configurations on validation and reporting that trial's own
score overstates it (the winner's curse: the selection favours lucky seeds). A confirmation
re-runs the ``top`` configurations the sweep's metric selects on validation, and every baseline
arm, on ``seeds`` fresh seeds no trial of the sweep used, and reports them on the test split
with t intervals and Holm-corrected verdicts (:func:`comparison`).

The runs go to ``<sweep>/confirm/`` (:data:`analysis.tables.CONFIRM`), a sweep directory of
its own (``trials/``, ``curves/``, ``stages/``, Tune's ``tune/``) beside the record
``confirm.json``; the sweep's own tables and its Optuna study are never written. Each run is a
trials row with ``config.arm`` ``confirm:<trial_id>`` or ``confirm:baseline:<name>``,
``config.repeats`` 1 and ``seed`` the fresh seed. The seeds are the integers after the
largest seed any trial of the sweep used, so running the command again resumes: a (arm,
seed) that has a finished row is not run again (a failed or stopped one is), and a larger
``--top`` or ``--seeds`` extends the confirmation (every confirmed arm runs on every recorded
seed) instead of replacing it.

A sweep without baseline arms (``baselines: []``) is refused: the verdicts say whether a
searched schedule beats a reference, and the reference must be run on the same fresh seeds.
Population-based sweeps (PBT, PB2) are refused too: their trials change settings as they
run, so a trial's final config is not the schedule that earned its score (replay the
exported schedule instead).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.search import Searcher

from analysis import CorruptResultsError, ResultsError, compare_results, load_trials, split_of
from analysis.tables import (
    CONFIRM,
    CONFIRM_ARM,
    CONFIRM_RECORD,
    SWEEP_MANIFEST,
    read_sweep_manifest,
)
from search._capacity import check_capacity
from search._inputs import InputError, check_bank_fits, check_inputs
from search._lock import SweepLock, SweepLockLost
from search._resume import probe_storage, trial_rows
from search._signals import SweepInterrupted, interruptible
from search._study import baseline_configs
from search.configs import RebuildError, rebuild_config
from search.errors import SweepInputError, SweepStorageError, storage_problem
from search.progress import (
    ProgressPrinter,
    TensorBoardLogger,
    TrialDirname,
    TuneConsole,
    describe_schedule,
    varying,
)
from search.sink import ParquetSink, recover_curves
from search.spec import SET_BY_THE_SWEEP, SearchSpec, SpecError, SweepSpec, validate_spec
from search.sweep import _concurrency, _reuse_processes, _trainable, connect
from search.teacher import TeacherError, ensure_teacher, teacher_dir
from trainables.config import StudentConfig, flatten, nest
from trainables.distill import bank_complete

__all__ = [
    "MAX_SEEDS",
    "MAX_TOP",
    "RebuildError",
    "SweepInterrupted",
    "SweepLockLost",
    "SweepStorageError",
    "comparison",
    "confirm_sweep",
    "fresh_seeds",
    "rebuild_config",
    "select_trials",
    "sweep_spec",
]

MAX_TOP = 64  # configurations confirmed at most
MAX_SEEDS = 64  # fresh seeds at most (StudentConfig.repeats' own limit)
_LM_TASKS = ("masked_lm", "causal_lm")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# --- the sweep and its selection ----------------------------------------------------------------


def sweep_spec(sweep_dir: str | os.PathLike) -> SweepSpec:
    """The validated spec a sweep was started from (its ``manifest.json``), its storage the
    parent of ``sweep_dir`` (a sweep directory may have been moved or copied: everything
    confirm writes or reads goes by ``sweep_dir`` itself, never ``spec.sweep_dir``).
    :class:`SweepInputError` in one line when ``sweep_dir`` is no sweep directory or its spec
    no longer validates."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SweepInputError(f"sweep: {str(sweep_dir)!r} is not a directory")
    if not (sweep_dir / SWEEP_MANIFEST).is_file():
        raise SweepInputError(
            f"sweep: {str(sweep_dir)!r} holds no {SWEEP_MANIFEST}; pass a sweep directory "
            "(<storage>/<name>) written by `python -m search run`"
        )
    manifest = read_sweep_manifest(sweep_dir)
    raw = (manifest or {}).get("spec")
    if not isinstance(raw, dict):
        raise SweepInputError(
            f"sweep: {str(sweep_dir / SWEEP_MANIFEST)!r} is not a sweep manifest (no 'spec' "
            "mapping in readable JSON)"
        )
    raw = dict(raw, storage=str(sweep_dir.parent))
    for section, owned in SET_BY_THE_SWEEP.items():  # the stored spec holds them, as dumped
        if isinstance(raw.get(section), dict):
            raw[section] = {k: v for k, v in raw[section].items() if k not in owned}
    search = raw.get("search")
    default = SearchSpec.model_fields["algorithm"].default
    if isinstance(search, dict) and search.get("algorithm") == default:
        # dumped, the default reads as chosen (PBT refuses a chosen algorithm but random)
        raw["search"] = {k: v for k, v in search.items() if k != "algorithm"}
    try:
        return validate_spec(raw)
    except SpecError as exc:
        raise SweepInputError(
            f"sweep: the spec in {str(sweep_dir / SWEEP_MANIFEST)!r} no longer validates "
            f"(written by another version?): {'; '.join(exc.problems)}"
        ) from None


def _reported(spec: SweepSpec) -> tuple[str, str]:
    """The test-split metric and mode a confirmation reports."""
    return ("test_perplexity", "min") if spec.task.kind in _LM_TASKS else ("test_accuracy", "max")


def _searched(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The finished searched trials (not baselines, not stopped or failed) with ``metric``."""
    return [
        row for row in rows
        if (row.get("config.arm") or "search") == "search"
        and row["status"] == "TERMINATED" and _finite(row.get(metric))
    ]  # fmt: skip


def _finite(value: Any) -> bool:
    """A metric a trial reached: not null, not NaN (a diverged trial) nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def select_trials(
    rows: list[dict[str, Any]], *, metric: str, mode: str, top: int
) -> list[dict[str, Any]]:
    """The ``top`` finished searched trials' rows by ``metric`` in ``mode``, best first; ties
    broken as ``analysis`` breaks them (validation accuracy, or validation loss when ranking
    by it, then trial id), so both name the same trials."""
    sign = -1.0 if mode == "max" else 1.0
    tie, tie_sign = ("val_loss", 1.0) if metric == "val_accuracy" else ("val_accuracy", -1.0)

    def key(row: dict[str, Any]) -> tuple:
        second = row.get(tie)
        second = tie_sign * second if _finite(second) and tie != metric else math.inf
        return (sign * row[metric], second, row["trial_id"])

    return sorted(_searched(rows, metric), key=key)[:top]


def fresh_seeds(rows: list[dict[str, Any]], count: int) -> list[int]:
    """``count`` seeds no trial in ``rows`` used: the integers after the largest one used (a
    trial with seed ``s`` and ``repeats`` ``r`` used ``s .. s + r - 1``)."""
    used = [
        row["seed"] + max(row.get("repeats") or row.get("config.repeats") or 1, 1) - 1
        for row in rows
        if row.get("seed") is not None
    ]
    start = max(used, default=-1) + 1
    return list(range(start, start + count))


# --- the record -----------------------------------------------------------------------------


@dataclass
class _Record:
    """``<sweep>/confirm/confirm.json``: what was confirmed (see :func:`confirm_sweep`)."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> _Record | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("selected"), list):
            raise SweepInputError(
                f"sweep: {str(path)!r} is not a confirmation record (unreadable JSON); move it "
                "aside and run the command again (the rows in its trials table are kept)"
            )
        return cls(path, data)

    def write(self) -> None:
        self.data["updated"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=2) + "\n")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _union(earlier: list, now: list, key=lambda x: x) -> list:
    seen = {key(item) for item in earlier}
    return list(earlier) + [item for item in now if key(item) not in seen]


# --- running --------------------------------------------------------------------------------


class _Listed(Searcher):
    """Suggest the given configs, in order, then nothing: whole configs (not Tune's
    ``points_to_evaluate``, which assigns them into the param space path by path, so a list
    longer than the base config's has no path to go to)."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.pending = list(configs)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        return self.pending.pop(0) if self.pending else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the confirm table says what has run."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a resumed confirmation reads the confirm table."""


class _Progress(ProgressPrinter):
    """One line per finished confirmation run: its arm, seed and both splits' metric."""

    def __init__(self, total: int, select: str, report: str) -> None:
        super().__init__(total, report)
        self.select = select

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        last = trial.last_result or {}
        shown = ", ".join(f"{m} {_number(last.get(m))}" for m in (self.select, self.metric))
        self._print(
            f"  [{self.done}/{self.total}] {trial.trial_id} {trial.config.get('arm')} seed "
            f"{trial.config.get('seed')}: {shown}"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        self._print(
            f"  [{self.done}/{self.total}] {trial.trial_id} {trial.config.get('arm')} seed "
            f"{trial.config.get('seed')} FAILED"
        )


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"


def _done(confirm_dir: Path) -> set[tuple[str, int]]:
    """The (arm, seed) pairs with a finished row (stopped and failed runs run again: a
    confirmation's arms are compared on the same seeds)."""
    try:
        rows = load_trials(confirm_dir).to_pylist()
    except CorruptResultsError:  # never taken for "nothing run yet": named, exit 2
        raise
    except ResultsError:  # nothing has run yet
        return set()
    return {
        (row.get("config.arm"), row.get("seed")) for row in rows if row["status"] == "TERMINATED"
    }


def _run_configs(
    spec: SweepSpec, configs: list[dict[str, Any]], confirm_dir: Path, run: int, verbose: int
) -> tune.ResultGrid:
    select, report = spec.selection[0], _reported(spec)[0]
    sink = ParquetSink(confirm_dir, spec.name, StudentConfig)  # no on_written: no study told
    tuner = tune.Tuner(
        _trainable(spec),
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=_Listed(configs),
            num_samples=len(configs),
            max_concurrent_trials=_concurrency(spec),
            reuse_actors=_reuse_processes(spec),
            trial_dirname_creator=TrialDirname(varying(spec.space)),
        ),
        run_config=tune.RunConfig(
            name=f"confirm-{run}",
            storage_path=str(confirm_dir / "tune"),
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=TuneConsole(
                verbose,
                describe=functools.partial(describe_schedule, searched=varying(spec.space)),
            ).alongside([sink, _Progress(len(configs), select, report), TensorBoardLogger()]),
            verbose=0,  # Tune's own console: TuneConsole shows it, without config dumps
        ),
    )
    results = tuner.fit()
    if sink.storage_error is not None:
        raise sink.storage_error
    return results


def _check_counts(top: int, seeds: int) -> None:
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise SweepInputError(f"--top: {top!r}; allowed: 1 to {MAX_TOP} configurations")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 2 <= seeds <= MAX_SEEDS:
        raise SweepInputError(
            f"--seeds: {seeds!r}; allowed: 2 to {MAX_SEEDS} (an interval needs two seeds or more)"
        )


def confirm_sweep(
    sweep_dir: str | os.PathLike,
    *,
    top: int = 3,
    seeds: int = 5,
    address: str | None = None,
    verbose: int = 0,
) -> Path:
    """Re-run the sweep's ``top`` best searched configurations (selected on validation by
    its metric and mode; the first objective's for a multi-objective sweep) and every
    baseline arm on ``seeds`` fresh seeds; return the confirmation's directory
    ``<sweep>/confirm`` (read it with :func:`comparison`, or
    :func:`analysis.tables.load_confirm`).

    Runs again resume, and extend: the record (``confirm.json``) keeps every configuration and
    seed confirmed so far, each confirmed arm runs on every recorded seed, and (arm, seed)
    pairs that have a row are not run again. Holds the sweep's lock while it runs: a ``run``
    of the same sweep meanwhile is refused, and a confirmation while the sweep runs.

    Uses an already-initialised Ray as is; otherwise starts (and afterwards stops) one. Raises
    :class:`SweepInputError` (one line) before anything starts for bad input: ``sweep_dir``
    not a sweep, ``top`` / ``seeds`` out of range, a sweep without baselines or finished
    searched trials, a config that cannot be rebuilt, a sweep another driver holds;
    :class:`SweepInterrupted` on Ctrl-C and :class:`SweepStorageError` on a full or read-only
    disk (what finished is kept; the same call resumes).
    """
    _check_counts(top, seeds)
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    spec = sweep_spec(sweep_dir)
    if spec.scheduler.population_based:
        raise SweepInputError(
            f"scheduler.kind: sweep {spec.name!r} is {spec.scheduler.kind!r}, whose trials change "
            "settings as they run; confirm its exported schedule instead (run it as a sweep's "
            "student config)"
        )
    with (
        interruptible() as interrupts,
        SweepLock(sweep_dir, on_lost=interrupts.interrupt) as lock,
    ):  # taken first: the selection reads a sweep no run is changing
        try:
            arms, record, bank, current = _plan(spec, sweep_dir, top, seeds)
            confirm_dir = record.path.parent
            pending = _pending(arms, record)
            if not pending:  # nothing to run: no Ray, no teacher
                record.write()
                print(f"confirm: {spec.name!r} is confirmed ({len(arms)} arms x "
                      f"{len(record.data['seeds'])} seeds, every run done)")  # fmt: skip
                return confirm_dir
            started = connect(address)
            try:
                probe_storage(sweep_dir)
                check_capacity(spec)
                if bank == current:  # else the trials' own bank, whole
                    interrupts.phase = "teacher"
                    ensure_teacher(
                        spec, outputs=bank, verbose=verbose, table=False,
                        tune_dir=confirm_dir / "tune", experiment=interrupts.experiment,
                    )  # fmt: skip
                    if interrupts.requested:
                        raise SweepInterrupted("teacher")
                interrupts.phase = "confirm"
                _confirm(spec, pending, len(arms), record, interrupts, verbose)
            finally:
                if started:
                    ray.shutdown()
        except (KeyboardInterrupt, SweepInterrupted) as exc:
            if lock.lost is not None:
                raise lock.lost_error() from None
            if isinstance(exc, SweepInterrupted):
                raise
            raise SweepInterrupted(interrupts.phase) from None
        except TeacherError:
            if interrupts.requested:
                raise SweepInterrupted("teacher") from None
            raise
        except OSError as exc:
            problem = storage_problem(exc, sweep_dir)
            if problem is None:
                raise
            raise problem from None
    return confirm_dir


def _plan(
    spec: SweepSpec, sweep_dir: Path, top: int, seeds: int
) -> tuple[dict[str, dict[str, Any]], _Record, Path, Path]:
    """What to confirm: every arm's config (the selected trials' rebuilt from their rows, the
    baselines'), the record to write, the teacher bank they all learn from and the one the
    spec gives now."""
    baselines = {
        f"{CONFIRM_ARM}{config['arm']}": config for config in baseline_configs(spec).values()
    }
    if not baselines:
        raise SweepInputError(
            f"baselines: sweep {spec.name!r} has no baseline arm and confirm compares the "
            "searched configurations against one on the same fresh seeds; run the sweep with "
            "baselines (e.g. baselines: [oneshot]; the default lists all three)"
        )
    metric, mode = spec.selection
    rows = trial_rows(sweep_dir)  # a damaged file: CorruptResultsError, naming it
    searched = _searched(rows, metric)
    if not searched:
        raise SweepInputError(
            f"sweep: {spec.name!r} has no finished searched trial with {metric!r} to confirm; "
            "run (or resume) the sweep first"
        )
    confirm_dir = sweep_dir / CONFIRM
    record = _Record.read(confirm_dir / CONFIRM_RECORD)
    earlier = record.data if record is not None else {}
    chosen = [
        {"trial_id": r["trial_id"], "arm": f"{CONFIRM_ARM}{r['trial_id']}", "value": r[metric],
         "rank": rank, "of": len(searched)}
        for rank, r in enumerate(select_trials(rows, metric=metric, mode=mode, top=top), 1)
    ]  # fmt: skip
    selected = _union(earlier.get("selected", []), chosen, key=lambda s: s["trial_id"])
    # every confirmed configuration's rank among the trials searched now (the sweep may have
    # grown since an earlier confirmation chose it)
    ranks = {
        r["trial_id"]: rank
        for rank, r in enumerate(select_trials(rows, metric=metric, mode=mode, top=len(rows)), 1)
    }
    for entry in selected:
        entry.update(rank=ranks.get(entry["trial_id"]), of=len(searched))
    selected.sort(key=lambda s: (s["rank"] is None, s["rank"] or 0, s["trial_id"]))
    new_seeds = fresh_seeds(rows, seeds)
    all_seeds = sorted(_union(earlier.get("seeds", []), new_seeds))
    if all_seeds[0] < new_seeds[0]:
        raise SweepInputError(
            f"sweep: {spec.name!r}'s trials used seed {all_seeds[0]} since it was confirmed; "
            f"move {str(confirm_dir)!r} aside to confirm it anew"
        )
    by_id = {row["trial_id"]: row for row in rows}
    missing = [s["trial_id"] for s in selected if s["trial_id"] not in by_id]
    if missing:
        raise SweepInputError(
            f"sweep: trial {missing[0]}, confirmed earlier, is no longer in {spec.name!r}'s "
            f"trials table; move {str(confirm_dir)!r} aside to confirm anew"
        )
    try:
        info = check_inputs(spec)  # hashes the data files: once
        current = teacher_dir(spec, info.num_classes if info else None)
        bank = _teacher_bank([by_id[s["trial_id"]] for s in selected], current)
        check_bank_fits(spec, info, bank)
    except InputError as exc:
        raise SweepInputError(str(exc)) from None
    base = spec.student_config(str(bank)).model_dump()
    arms = {s["arm"]: rebuild_config(by_id[s["trial_id"]], base).model_dump() for s in selected}
    for arm, partial in baselines.items():
        arms[arm] = StudentConfig.model_validate(nest(flatten(partial), into=base)).model_dump()
    report_metric, report_mode = _reported(spec)
    data = {
        "sweep": spec.name, "metric": metric, "mode": mode, "split": split_of(metric),
        "report_metric": report_metric, "report_mode": report_mode,
        "searched": len(searched), "selected": selected,
        "baselines": _union(earlier.get("baselines", []), list(baselines)),
        "seeds": all_seeds, "created": earlier.get("created", _now()),
        "runs": earlier.get("runs", []),
    }  # fmt: skip
    return arms, _Record(confirm_dir / CONFIRM_RECORD, data), bank, current


def _teacher_bank(rows: list[dict[str, Any]], current: Path) -> Path:
    """The teacher bank the selected trials learned from, which every confirmation run (the
    baselines' too) learns from: their own when it is still whole, or the spec's (built again
    if it is gone) when that is the one they used. A trial whose bank is gone and differs from
    the spec's (the teacher's settings or this version's teacher key changed since) cannot be
    confirmed as it ran: refused in one line."""
    used = {Path(row["config.teacher_bank"]) for row in rows if row.get("config.teacher_bank")}
    if len(used) > 1:
        raise SweepInputError(
            f"sweep: the selected trials learned from {len(used)} different teacher banks "
            f"({', '.join(sorted(map(str, used)))}); confirm them in separate sweeps"
        )
    bank = used.pop() if used else current
    if bank != current and not bank_complete(bank):
        raise SweepInputError(
            f"sweep: the selected trials learned from the teacher bank {str(bank)!r}, which is "
            f"gone or incomplete, and the spec now gives another ({str(current)!r}: the "
            "teacher's settings or this version's teacher key changed); a confirmation must "
            "use the teacher the trials ran with"
        )
    return bank


def _pending(arms: dict[str, dict[str, Any]], record: _Record) -> list[dict[str, Any]]:
    """The runs still to do: every arm on every recorded seed, less the (arm, seed) pairs
    with a finished row; seed by seed, the baselines first, so an interrupted confirmation
    has whole seeds and its comparison a reference."""
    confirm_dir = record.path.parent
    if confirm_dir.is_dir():
        recovered = recover_curves(confirm_dir)  # rows a killed run logged but never wrote
        if recovered:
            print(f"confirm: recovered {recovered} curve rows of an interrupted run")
    done = _done(confirm_dir) if confirm_dir.is_dir() else set()
    order = sorted(arms, key=lambda arm: not arm.startswith(f"{CONFIRM_ARM}baseline:"))
    return [
        {**arms[arm], "arm": arm, "seed": seed, "repeats": 1}
        for seed in record.data["seeds"]
        for arm in order
        if (arm, seed) not in done
    ]


def _confirm(
    spec: SweepSpec,
    pending: list[dict[str, Any]],
    arms: int,
    record: _Record,
    interrupts,
    verbose: int,
) -> None:
    confirm_dir = record.path.parent
    seeds = record.data["seeds"]
    total = arms * len(seeds)
    run = len(record.data["runs"])
    record.data["runs"].append({"started": _now(), "ended": None, "trials": len(pending)})
    record.write()
    print(
        f"confirm: {len(pending)} runs ({arms} arms x {len(seeds)} fresh seeds"
        + (f", {total - len(pending)} done" if len(pending) < total else "")
        + f") -> {confirm_dir}"
    )
    with interrupts.experiment():
        results = _run_configs(spec, pending, confirm_dir, run, verbose)
    if interrupts.requested:
        raise SweepInterrupted("confirm")
    failed = sum(r.error is not None for r in results)
    print(f"confirm: {len(results) - failed} finished, {failed} failed")
    record.data["runs"][-1]["ended"] = _now()
    record.write()


# --- the comparison -------------------------------------------------------------------------


def comparison(sweep_dir: str | os.PathLike) -> tuple[str, pd.DataFrame]:
    """A confirmed sweep's comparison on the test split (:func:`analysis.compare_results` on
    its confirmation rows: the same table ``python -m analysis compare`` prints): the line
    saying what was confirmed and how, and the table of every confirmed arm against the
    ``oneshot`` baseline (else the first baseline arm). :class:`ResultsError` when the sweep
    was not confirmed or its baseline has no finished run."""
    table = compare_results(sweep_dir, rows="confirm")
    return table.attrs["summary"], table
