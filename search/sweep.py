"""Assemble and run one sweep: connect, teacher phase, student phase (Tuner + OptunaSearch)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import ray
from pydantic import BaseModel
from ray import tune
from ray.tune.search import BasicVariantGenerator

from analysis.tables import TEACHER, TEACHER_FILE
from search._capacity import check_capacity
from search._inputs import InputError, check_bank_fits, check_inputs
from search._lock import SweepLock, SweepLockLost
from search._resume import (
    Manifest,
    ResumePlan,
    check_results,
    plan_resume,
    probe_storage,
    trial_rows,
)
from search._signals import Interrupts, SweepInterrupted, interruptible
from search._study import (
    WithBaselines,
    baseline_configs,
    open_study,
    optuna_searcher,
    study_storage,
)
from search.errors import (
    RayConnectError,
    StorageError,
    SweepExistsError,
    SweepInputError,
    SweepStorageError,
    storage_problem,
)
from search.progress import (
    ProgressPrinter,
    TensorBoardLogger,
    TrialDirname,
    TuneConsole,
    describe_schedule,
    varying,
)
from search.schedulers import export_schedule, is_baseline, make_scheduler, population
from search.sink import ParquetSink, recover_curves
from search.spec import SET_BY_THE_SWEEP, SpecError, SweepSpec, redact, validate_spec
from search.teacher import TeacherError, ensure_teacher, teacher_dir
from trainables.config import DataConfig, StudentConfig, TaskConfig, TeacherConfig
from trainables.distill import open_bank
from trainables.loops import missing_transition
from trainables.student import distributed_student, train_student

__all__ = [
    "RayConnectError",
    "SweepExistsError",
    "SweepInputError",
    "SweepInterrupted",
    "SweepLockLost",
    "SweepStorageError",
    "connect",
    "run_sweep",
    "teacher_bank",
]


@functools.cache
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def connect(address: str | None) -> bool:
    """Start embedded local Ray, or connect to ``address``; True if this call started Ray.

    An already-initialised Ray (a notebook, a test session, a user's job) is used as it is.
    ``address=None`` honours ``RAY_ADDRESS`` and otherwise starts a local instance. A cluster
    that refuses this machine's authentication token (or its absence) fails in one line
    saying how to give it (:func:`search.errors.ray_auth_error`), within seconds: Ray itself
    retries for ~20 s, printing a warning a second, then raises a chained traceback.
    """
    from ray.exceptions import AuthenticationError

    from search.errors import ray_auth_error

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, RuntimeError, AuthenticationError) as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, AuthenticationError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:  # e.g. "auto", or RAY_AUTH_MODE=token with no token at all
            raise ray_auth_error(f"the Ray cluster at {redact(address)!r}") from None
        if not isinstance(exc, ConnectionError):
            raise
        raise RayConnectError(
            f"address: cannot connect to Ray at {redact(address)!r}: {redact(str(exc))}"
        ) from None
    return True


# Run in a subprocess by _check_reachable: one GCS request, so a refused token shows in about a
# second, and Ray's C++ warnings stay in the probe. (GcsClient is Ray's own internal client,
# the one `ray status` uses; if it moves, the probe exits 1 and ray.init decides.)
_GCS_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
print("imported", flush=True)  # the request's own time is counted from here
try:
    GcsClient(address=sys.argv[1]).cluster_id
except AuthenticationError:
    sys.exit(3)
"""
_PROBE_AUTH = 3


def _check_reachable(address: str, timeout_s: float = 5.0, answer_s: float = 15.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (ray.init may wait for minutes), on a
    cluster that refuses this machine's token (Ray retries that for ~20 s), and on a port that
    is not a Ray head's (the dashboard's 8265: ray.init waits there for minutes)."""
    import subprocess
    import sys

    from search.errors import ray_auth_error

    match = re.fullmatch(r"([\w.-]+):(\d+)", address)
    if not match:
        return  # "local", "auto", "ray://..." are Ray's to resolve
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayConnectError(
            f"address: cannot connect to Ray at {redact(address)!r}: {reason}"
        ) from None
    with subprocess.Popen(
        [sys.executable, "-c", _GCS_PROBE, address],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as probe:  # fmt: skip
        probe.stdout.readline()  # Ray imported, however loaded the machine (or the probe died)
        try:
            probe.wait(timeout=answer_s)
        except subprocess.TimeoutExpired:
            probe.kill()
            answered = False
        else:
            answered = True
    if not answered:
        raise RayConnectError(
            f"address: {redact(address)!r} accepts connections but no Ray head answered "
            f"within {answer_s:.0f} s: --address takes the head's GCS address (`ray start "
            "--head --port`, default 6379), not the dashboard's (8265, for `submit`)"
        ) from None
    if probe.returncode == _PROBE_AUTH:
        raise ray_auth_error(f"the Ray cluster at {redact(address)!r}")


def _concurrency(spec: SweepSpec) -> int:
    """``resources.max_concurrent``, else as many trials as the cluster's CPUs (and GPUs,
    for GPU trials) hold."""
    res = spec.resources
    if res.max_concurrent:
        return res.max_concurrent
    cluster = ray.cluster_resources()
    fits = cluster.get("CPU", 1.0) // (res.cpus_per_trial * res.workers)
    if res.gpus_per_trial:
        fits = min(fits, cluster.get("GPU", 0.0) // res.gpus_per_trial)
    return max(1, int(fits))


def _trainable(spec: SweepSpec):
    res = spec.resources
    if res.workers == 1:  # the loop runs inline in the Tune trial
        return tune.with_resources(
            train_student, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
        )
    trainable = distributed_student(
        res.workers, cpus_per_worker=res.cpus_per_trial, use_gpu=res.gpus_per_trial > 0,
        start_timeout_s=res.start_timeout_s,
    )  # fmt: skip
    # The trial itself only coordinates; its workers reserve their own CPUs. (Tune refuses an
    # empty request, so it holds a token of memory.)
    return tune.with_resources(trainable, {"cpu": 0, "memory": 2**20})


def _reuse_processes(spec: SweepSpec) -> bool:
    """Whether a trial may run in a process a finished trial left (Tune's ``reuse_actors``).

    Reuse saves each trial its process start-up (~2 s: the 16-trial benchmark sweep of 5 s
    trials takes 47 s with it, 78 s without). But Ray (2.60) fails a trial outright, whatever
    max_failures says, when the reused process died meanwhile (its node was lost): it counts
    the failed reset twice, the second time with the trial PENDING, which it never retries.
    So by default: reuse on a one-node cluster (losing the node ends the sweep anyway) and
    under PBT/PB2 (which pause and resume trials at every perturbation: their test sweep
    takes 32 s with reuse, ~230 s without), fresh processes on a multi-node cluster."""
    res = spec.resources
    if res.workers > 1:
        return False
    if res.reuse_processes is not None:
        return res.reuse_processes
    alive = [node for node in ray.nodes() if node["Alive"]]
    return spec.scheduler.population_based or len(alive) <= 1


def run_students(
    spec: SweepSpec,
    teacher_bank: Path,
    plan: ResumePlan,
    *,
    storage,
    verbose: int = 0,
) -> tune.ResultGrid:
    """The student phase: the baselines still to run, then ``plan.remaining`` trials proposed
    by the spec's Optuna sampler over ``spec.space``."""
    _quiet_optuna()
    base = spec.student_config(str(teacher_bank)).model_dump()
    baselines = [c for arm, c in baseline_configs(spec).items() if arm not in plan.done_arms]
    total = max(plan.remaining, 0) + len(baselines)
    if spec.scheduler.population_based:  # Tune runs no search algorithm beside PBT
        searcher = BasicVariantGenerator(
            points_to_evaluate=baselines + population(spec, max(plan.remaining, 0), plan.run)
        )
    else:
        searcher = WithBaselines(optuna_searcher(spec, storage, plan.run), baselines)
    told = searcher.tell if isinstance(searcher, WithBaselines) else None
    sink = ParquetSink(spec.sweep_dir, spec.name, StudentConfig, on_written=told)
    tuner = tune.Tuner(
        _trainable(spec),
        param_space=base,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(spec),
            num_samples=total,
            # Tune ignores it beside PBT's generator of points (and says so, once a sweep)
            max_concurrent_trials=None if spec.scheduler.population_based else _concurrency(spec),
            time_budget_s=spec.time_budget_s,
            reuse_actors=_reuse_processes(spec),
            trial_dirname_creator=TrialDirname(varying(spec.space)),
        ),
        run_config=tune.RunConfig(
            name=f"students-{plan.run}" if plan.run else "students",
            storage_path=str(spec.sweep_dir / "tune"),
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            # PBT trials (and any with resources.checkpoint) checkpoint at every report. A
            # retry restores its own latest, so two are enough; but PBT restores a donor's
            # checkpoint of the exploit's time, perhaps after the donor has reported several
            # more times (the recipient waits for resources): with few kept, Tune had deleted
            # it and the exploit failed ("does not exist on storage anymore"). PBT keeps all.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None if spec.scheduler.population_based else 2
            ),
            callbacks=TuneConsole(
                verbose,
                *spec.selection,
                describe=functools.partial(describe_schedule, searched=varying(spec.space)),
            ).alongside(
                [
                    sink,
                    ProgressPrinter(total, spec.selection[0], searched=varying(spec.space)),
                    TensorBoardLogger(),
                ]
            ),  # fmt: skip
            verbose=0,  # Tune's own console: TuneConsole shows it, without config dumps
        ),
    )
    with _quiet(_TUNE_NOISE):
        results = tuner.fit()
    if sink.storage_error is not None:  # trials failed on a full or read-only disk
        raise sink.storage_error
    return results


# Tune's warnings that a sweep makes by design, one per trial or per exploit: a baseline's
# `arm` differs from the searched trials' ("Pre-set value ... is not equal"), and a PBT trial
# restored from another's checkpoint has no result file of its own yet ("Remote file not
# found")
_TUNE_NOISE = ("ray.tune.search.variant_generator", "ray.tune.logger.logger")


@contextlib.contextmanager
def _quiet(loggers: tuple[str, ...], level: int = logging.ERROR) -> Iterator[None]:
    """``loggers`` at ``level`` meanwhile, their own levels restored after."""
    before = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, old in before.items():
            logging.getLogger(name).setLevel(old)


def _stopped(spec: SweepSpec, plan: ResumePlan) -> int:
    """How many of this run's trials the experiment stopped (``STOPPED`` rows)."""
    return sum(row["status"] == "STOPPED" for row in trial_rows(spec.sweep_dir)) - plan.stopped


def run_sweep(spec: SweepSpec, *, address: str | None = None, verbose: int = 0) -> Path:
    """Run a sweep, or resume it when ``<storage>/<name>`` already holds one started from the
    same spec: finished trials are kept and not re-run, the Optuna study continues.

    Uses an already-initialised Ray as is; otherwise starts (and afterwards stops) one.
    ``verbose`` is Tune's verbosity (0: only this package's one line per trial).

    Raises :class:`SweepInputError` before anything starts (bad data, storage that cannot be
    written, a sweep started from another spec or run by another driver, a cluster that
    cannot hold one trial); :class:`SweepInterrupted` on SIGINT (Ctrl-C) in any phase and
    :class:`SweepStorageError` on a full or read-only disk: what finished is kept, and the
    same call again resumes the sweep.
    """
    spec = spec.with_absolute_paths()  # a trial runs in a directory of its own
    try:
        info = check_inputs(spec)
        # hashes the data files: once per run
        teacher_bank = teacher_dir(spec, info.num_classes if info else None)
        check_bank_fits(spec, info, teacher_bank)
    except InputError as exc:
        raise SweepInputError(str(exc)) from None
    _check_writable(spec)  # the first thing written: nothing is, for any input refused above
    with (
        interruptible() as interrupts,
        SweepLock(spec.sweep_dir, on_lost=interrupts.interrupt) as lock,
    ):
        try:
            manifest = Manifest.open(spec)  # raises SweepExistsError if the spec changed
            check_results(spec.sweep_dir)  # a damaged table stops it before the teacher
            started = connect(address)
            try:
                return _run(spec, manifest, interrupts, teacher_bank, verbose)
            finally:
                if started:
                    ray.shutdown()
        except (KeyboardInterrupt, SweepInterrupted) as exc:
            if lock.lost is not None:  # the lock's heartbeat stopped the run, not the user
                raise lock.lost_error() from None
            if isinstance(exc, SweepInterrupted):
                raise
            raise SweepInterrupted(interrupts.phase) from None
        except (OSError, TeacherError) as exc:
            problem = storage_problem(exc, spec.sweep_dir)
            if problem is None:
                raise
            raise problem from None


def build_teacher(spec: SweepSpec, *, address: str | None = None, verbose: int = 0) -> Path:
    """Train the spec's teacher and build its bank ahead of any sweep (``python -m search
    teacher``), or reuse them; returns the bank's directory. Every sweep whose teacher
    settings (and ``teacher.bank`` storage settings) match reads this bank instead of
    building its own. Raises like :func:`run_sweep`."""
    spec = spec.with_absolute_paths()
    try:
        info = check_inputs(spec)
        bank = teacher_dir(spec, info.num_classes)
        check_bank_fits(spec, info, bank)
    except InputError as exc:
        raise SweepInputError(str(exc)) from None
    with interruptible() as interrupts:
        try:
            started = connect(address)
            try:
                interrupts.phase = "teacher"
                bank = ensure_teacher(
                    spec, outputs=bank, verbose=verbose, table=False,
                    tune_dir=bank.parent / "tune", experiment=interrupts.experiment,
                )  # fmt: skip
                if interrupts.requested:
                    raise SweepInterrupted("teacher")
                return bank
            finally:
                if started:
                    ray.shutdown()
        except TeacherError:
            if interrupts.requested:
                raise SweepInterrupted("teacher") from None
            raise
        except KeyboardInterrupt:
            raise SweepInterrupted(interrupts.phase) from None


def teacher_bank(
    teacher: TeacherConfig | dict,
    *,
    data: DataConfig | dict | None = None,
    task: TaskConfig | dict | None = None,
    storage: str | os.PathLike = "results",
    address: str | None = None,
    verbose: int = 0,
) -> Path:
    """Build, or find, the teacher bank of ``teacher`` trained on ``data`` under ``task``, and
    return its directory: what ``trainables.train_student`` takes as ``teacher_bank``, so that
    your own Tuner (or ``TorchTrainer``) can distil from it::

        bank = search.teacher_bank(TeacherConfig(...), data=DataConfig(kind="digits"),
                                   storage="/shared/results")
        tune.Tuner(train_student, param_space=StudentConfig(teacher_bank=str(bank),
                   data=DataConfig(kind="digits")).model_dump()).fit()

    The bank is the one a sweep with the same ``storage`` (or ``teacher.bank.root``), data,
    task and teacher settings uses: ``<storage>/_teachers/<content hash>/bank-<layout
    hash>``, keyed by the data (the files' contents too), the task and the teacher's
    settings. An intact bank is reused as it is; otherwise the teacher is trained (a Tune
    trial) and the bank built (Ray Data) on the Ray this process uses (started here, and
    stopped after, when none is; ``address`` for a cluster). ``data`` and ``task`` default to
    the ones ``teacher`` holds; its ``output_dir`` and ``fold`` are the bank's to choose.
    Raises :class:`SweepInputError` (one line) for bad data or settings."""

    def given(value: Any) -> Any:  # as the user wrote it: a model's fields they set
        return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value

    raw_teacher = given(teacher)
    raw = {"name": "teacher", "storage": str(storage), "teacher": raw_teacher}
    if isinstance(raw_teacher, dict):  # data and task: given, else the teacher's own
        raw["teacher"] = {
            k: v for k, v in raw_teacher.items() if k not in SET_BY_THE_SWEEP["teacher"]
        }
        raw["data"] = given(data) if data is not None else raw_teacher.get("data", {})
        raw["task"] = given(task) if task is not None else raw_teacher.get("task", {})
    try:
        spec = validate_spec(raw)
    except SpecError as exc:  # every problem, by its field
        raise SweepInputError("; ".join(exc.problems)) from None
    return build_teacher(spec, address=address, verbose=verbose)


def _run(
    spec: SweepSpec, manifest: Manifest, interrupts: Interrupts, teacher_bank: Path, verbose: int
) -> Path:
    probe_storage(spec.sweep_dir)
    check_capacity(spec)
    storage = study_storage(spec)  # a database that cannot be reached fails before the teacher
    study = open_study(spec, storage)
    interrupts.phase = "teacher"
    try:  # Tune's experiment handles a Ctrl-C; elsewhere (the bank's build) it raises at once
        teacher_bank = ensure_teacher(
            spec, outputs=teacher_bank, verbose=verbose, experiment=interrupts.experiment
        )
    except TeacherError:
        if interrupts.requested:  # Tune stopped the teacher's trial
            raise SweepInterrupted("teacher") from None
        raise
    if interrupts.requested:
        raise SweepInterrupted("teacher")
    _check_transition(spec, teacher_bank)  # before any student trial starts
    spec = _check_scores(spec, teacher_bank)
    interrupts.phase = "student"
    recovered = recover_curves(spec.sweep_dir)  # rows a killed run logged but never wrote
    if recovered:
        print(f"students: recovered {recovered} curve rows of an interrupted run")
    plan = plan_resume(spec, study, manifest.runs)
    if plan.remaining <= 0 and len(plan.done_arms) >= len(baseline_configs(spec)):
        print(f"students: sweep {spec.name!r} is complete ({plan.done} trials)")
        return spec.sweep_dir
    manifest.begin()
    if plan.done:
        print(f"students: resuming, {plan.done} trials done, {plan.remaining} to go")
    for note in spec.space_notes():
        print(f"note: {note}")
    print(f"students: -> {spec.sweep_dir}")
    with interrupts.experiment():
        results = run_students(spec, teacher_bank, plan, storage=storage, verbose=verbose)
    if interrupts.requested:  # Tune stopped the running trials: recorded STOPPED
        raise SweepInterrupted("student")
    failed = sum(r.error is not None for r in results)
    damaged = sum("BankCorruptError" in str(r.error) for r in results if r.error is not None)
    stopped = _stopped(spec, plan)
    finished = len(results) - failed - stopped
    print(
        f"students: {finished} finished, "
        + (f"{stopped} stopped before their end (run again to go on), " if stopped else "")
        + f"{failed} failed"
        + (
            f" ({damaged} on a damaged teacher bank: run the same command again to rebuild "
            "it and run them again)"
            if damaged
            else ""
        )
    )
    searched = [r for r in results if r.error is None and not is_baseline(r.config)]
    if spec.scheduler.population_based and searched:
        metric, mode = spec.selection
        sign = 1 if mode == "max" else -1
        best = max(searched, key=lambda r: sign * r.metrics[metric])
        out = export_schedule(spec, Path(best.path).parent, best.metrics["trial_id"], best.config)
        print(f"students: PBT's best schedule -> {out}")
    manifest.end()
    return spec.sweep_dir


def _check_transition(spec: SweepSpec, bank: Path) -> None:
    """:class:`SweepInputError` (one line) when the student or the space can run ``two_shot``
    from checkpoint ``transition`` and the teacher has no phase transition: every such trial
    would fail (:func:`trainables.loops.missing_transition`), so none starts."""
    schedule = spec.student.teacher_schedule
    kinds = {schedule.kind, *spec.space.teacher_schedules}
    if schedule.checkpoint != "transition" or "two_shot" not in kinds:
        return
    table = spec.sweep_dir / TEACHER / TEACHER_FILE
    problem = missing_transition(
        open_bank(bank), where=f"the teacher table {table}",
        field="student.teacher_schedule.checkpoint",
    )  # fmt: skip
    if problem is not None:
        raise SweepInputError(problem)


def _check_scores(spec: SweepSpec, bank: Path) -> SweepSpec:
    """The spec the students run with, given the teacher bank's scores. A teacher run reused
    from a version before KNN-Shapley scores existed has no ``shapley`` (teacher runs are
    keyed by their settings, not by the code): a student or a space that names it is refused
    in one line (:class:`SweepInputError`), since every such trial would fail; the ``all``
    preset's default score list leaves it out, with a note."""
    cur = spec.student.curriculum
    named = cur.score == "shapley" or cur.prune_by == "shapley"
    listed = "scores" in spec.space.model_fields_set and "shapley" in spec.space.scores
    drawn = "shapley" in spec.space.scores
    if spec.task.kind != "classify" or not drawn and not named:
        return spec
    if "shapley" in open_bank(bank).scores:
        return spec
    if named or listed:
        raise SweepInputError(
            "student.curriculum.score / space.scores: 'shapley' is not in the teacher bank "
            f"{str(bank)!r}, whose teacher ran before KNN-Shapley scores existed; remove "
            f"{str(bank.parent)!r} to train the teacher again with them, or leave shapley out"
        )
    print(
        f"note: the teacher bank {str(bank)!r} was built before KNN-Shapley scores existed: "
        f"the space leaves the shapley score out (remove {str(bank.parent)!r} to have it)"
    )
    scores = [s for s in spec.space.scores if s != "shapley"]
    return spec.model_copy(update={"space": spec.space.model_copy(update={"scores": scores})})


def _check_writable(spec: SweepSpec) -> None:
    """:class:`StorageError` naming the path when the sweep directory cannot be made or
    written (a file in the way, a read-only mount, a full disk, no permission)."""
    root = Path(spec.storage).resolve()
    if root.exists() and not root.is_dir():
        raise StorageError(f"storage: {str(root)!r} is a file, not a directory")
    probe = spec.sweep_dir / f".probe-{os.getpid()}"
    try:
        spec.sweep_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
    except OSError as exc:
        where = exc.filename or spec.sweep_dir
        raise StorageError(
            f"storage: cannot write {str(where)!r}: {exc.strerror or exc}; choose a writable "
            "--storage"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
