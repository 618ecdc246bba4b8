"""Assemble and run one sweep: connect, teacher phase, student phase (Tuner + OptunaSearch)."""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search.progress import ProgressPrinter
from search.sink import ParquetSink
from search.spec import SweepSpec
from search.teacher import ensure_teacher
from spaces import distillation_space
from trainables.config import StudentConfig
from trainables.student import train_student

STUDY_NAME = "students"


class SweepInputError(ValueError):
    """A problem the user can fix (exit code 2 from the CLI)."""


class SweepExistsError(SweepInputError):
    """The sweep directory already holds results (nothing is overwritten)."""


class RayConnectError(SweepInputError):
    """``--address`` names no reachable Ray cluster."""


def check_new_sweep(spec: SweepSpec) -> None:
    trials = spec.sweep_dir / "trials"
    if trials.is_dir() and any(trials.iterdir()):
        raise SweepExistsError(
            f"name: sweep {spec.name!r} already has results in {spec.sweep_dir}; "
            "choose another --name or remove that directory"
        )


@functools.cache
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def connect(address: str | None) -> bool:
    """Start embedded local Ray, or connect to ``address``; True if this call started Ray.

    An already-initialised Ray (a notebook, a test session, a user's job) is used as it is.
    ``address=None`` honours ``RAY_ADDRESS`` and otherwise starts a local instance.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    except ConnectionError as exc:
        raise RayConnectError(f"address: cannot connect to Ray at {address!r}: {exc}") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` nobody listens on (ray.init may wait for minutes)."""
    match = re.fullmatch(r"([\w.-]+):(\d+)", address)
    if not match:
        return  # "local", "auto", "ray://..." are Ray's to resolve
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayConnectError(f"address: cannot connect to Ray at {address!r}: {reason}") from None


def run_students(spec: SweepSpec, teacher_outputs: Path, *, verbose: int = 0) -> tune.ResultGrid:
    """The student phase: ``num_samples`` trials proposed by Optuna's TPE over ``spec.space``."""
    _quiet_optuna()
    base = spec.student_config(str(teacher_outputs)).model_dump()
    searcher = OptunaSearch(
        space=functools.partial(distillation_space, bounds=spec.space),
        metric=spec.metric,
        mode=spec.mode,
        sampler=optuna.samplers.TPESampler(
            seed=spec.seed, n_startup_trials=spec.search.n_startup_trials
        ),
        storage=_seeded_study_storage(spec),
        study_name=STUDY_NAME,
    )
    tuner = tune.Tuner(
        tune.with_resources(train_student, {"cpu": spec.resources.cpus_per_trial}),
        param_space=base,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=spec.num_samples,
            max_concurrent_trials=spec.resources.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="students",
            storage_path=str(spec.sweep_dir / "tune"),
            callbacks=[
                ParquetSink(spec.sweep_dir, spec.name, StudentConfig),
                ProgressPrinter(spec.num_samples, spec.metric),
            ],
            verbose=verbose,
        ),
    )
    return tuner.fit()


def _seeded_study_storage(spec: SweepSpec) -> optuna.storages.BaseStorage:
    """The Optuna study's storage, with the first trials enqueued when asked: one per curriculum
    kind (other parameters sampled), so TPE cannot leave an arm untried by chance.

    Ray ignores ``points_to_evaluate`` for define-by-run spaces (ray#35319), so the trials are
    enqueued in the study itself, which OptunaSearch then loads.
    """
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage,
        study_name=STUDY_NAME,
        direction="maximize" if spec.mode == "max" else "minimize",
    )
    if spec.search.cover_curricula:
        for kind in spec.space.curricula[: spec.num_samples]:
            study.enqueue_trial({"curriculum/kind": kind}, skip_if_exists=True)
    return storage


def run_sweep(spec: SweepSpec, *, address: str | None = None, verbose: int = 0) -> Path:
    """Run a whole sweep; return its results directory ``<storage>/<name>``.

    Uses an already-initialised Ray as is; otherwise starts (and afterwards stops) one.
    ``verbose`` is Tune's verbosity (0: only this package's one line per trial).
    """
    check_new_sweep(spec)
    started = connect(address)
    try:
        teacher_outputs = ensure_teacher(spec, verbose=verbose)
        print(f"students: {spec.num_samples} trials -> {spec.sweep_dir}")
        results = run_students(spec, teacher_outputs, verbose=verbose)
        failed = sum(r.error is not None for r in results)
        print(f"students: {len(results) - failed} finished, {failed} failed")
    finally:
        if started:
            ray.shutdown()
    return spec.sweep_dir
