"""The Optuna side of a sweep: sampler, persistent study, first trials, and the searcher that
runs the baseline arms beside Optuna's proposals."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from analysis.tables import STUDY_JOURNAL, STUDY_NAME
from search.errors import SweepInputError
from search.spec import SweepSpec, redact
from spaces import distillation_space, supported
from trainables.config import nest


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid over the given parameters; the conditional parameters a define-by-run space
    adds outside the grid are drawn at random. Never calls ``study.stop()`` (Ray drives the
    study with ask/tell, where stopping is an error); trials past the grid repeat grid points."""

    def __init__(self, grid: dict[str, list[Any]], seed: int) -> None:
        super().__init__(grid, seed=seed)
        self._others = optuna.samplers.RandomSampler(seed=seed)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name not in self._search_space:
            return self._others.sample_independent(study, trial, param_name, param_distribution)
        return super().sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        pass


def run_seed(seed: int, run: int) -> int:
    """The seed of a sweep's ``run``-th run (0: the first): ``seed`` itself for the first, and
    for each resumed run another one derived from both, so a resumed sweep's sampler does not
    replay the proposals its first run already evaluated."""
    if run == 0:
        return seed
    return int(np.random.SeedSequence([seed, run]).generate_state(1)[0])


def optuna_sampler(spec: SweepSpec, run: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's search algorithm as a seeded Optuna sampler (see :func:`run_seed`)."""
    search, seed = spec.search, run_seed(spec.seed, run)
    if search.algorithm == "tpe":
        with warnings.catch_warnings():  # multivariate / group are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=search.n_startup_trials,
                multivariate=search.multivariate, group=search.multivariate and search.group,
            )  # fmt: skip
    if search.algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=search.n_startup_trials, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
        )  # fmt: skip
    if search.algorithm == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=search.population_size)
    if search.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return _GridSampler(search.grid, seed)


def study_storage(spec: SweepSpec) -> optuna.storages.BaseStorage:
    """The spec's RDB storage, or a journal file in the sweep directory (survives a crash).

    :class:`SweepInputError` in one line, the URL's password redacted (a database driver's
    message may hold it), when the database cannot be reached."""
    url = spec.search.study_storage
    if url:
        try:
            return optuna.storages.RDBStorage(url)
        except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
            cause = f" ({_first_line(exc.__cause__)})" if exc.__cause__ else ""
            raise SweepInputError(
                f"search.study_storage: cannot open the study at {redact(url)!r}: "
                f"{redact(_first_line(exc) + cause)}"
            ) from None
    spec.sweep_dir.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(spec.sweep_dir / STUDY_JOURNAL))
    return optuna.storages.JournalStorage(backend)


def open_study(spec: SweepSpec, storage) -> optuna.Study:
    """Create or load the sweep's study; enqueue the first trials when it is new: one per
    curriculum kind (``cover_curricula``), then the user's ``points``.

    Ray ignores ``points_to_evaluate`` for define-by-run spaces (ray#35319), so starting points
    are enqueued in the study itself, which OptunaSearch then loads.
    """
    modes = spec.objective_modes
    directions = ["maximize" if m == "max" else "minimize" for m in modes]
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, directions=directions, load_if_exists=True
    )
    if not study.trials and not spec.scheduler.population_based:
        # PBT and PB2 draw their population themselves (Tune runs no search algorithm beside
        # them): their study stays empty, not two enqueued trials waiting forever
        enqueue_first_trials(study, spec, spec.num_samples)
    return study


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def enqueue_first_trials(study: optuna.Study, spec: SweepSpec, size: int) -> None:
    """One trial per curriculum kind (``cover_curricula``, at most ``size``), then the user's
    ``points``; their other parameters are sampled."""
    if spec.search.cover_curricula and len(spec.space.curricula) > 1:
        kinds = supported("curriculum.kind", spec.space.curricula, {}, spec.space_base)
        for kind in kinds[:size]:
            study.enqueue_trial({"curriculum.kind": kind})
    for point in spec.search.points:
        study.enqueue_trial(point)


def optuna_searcher(spec: SweepSpec, storage, run: int = 0) -> OptunaSearch:
    """Ray Tune's OptunaSearch over the spec's space and the sweep's persistent study. Its
    suggestions are flat ``{dotted.path: value}``: :class:`WithBaselines` nests them."""
    metrics, modes = spec.objective_metrics, spec.objective_modes
    multi = len(metrics) > 1
    return OptunaSearch(
        space=functools.partial(distillation_space, bounds=spec.space, base=spec.space_base),
        metric=metrics if multi else metrics[0],
        mode=modes if multi else modes[0],
        sampler=optuna_sampler(spec, run),
        storage=storage,
        study_name=STUDY_NAME,
    )


def baseline_configs(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """The spec's baseline arms as partial student configs, keyed by arm name.

    ``no_curriculum``: the student's own settings (``spec.student``) without a curriculum;
    ``labels_only``: no teacher signal (``alpha = 1``); ``oneshot``: distillation from the
    final teacher at the student's temperature and alpha. An arm identical to an earlier one
    is dropped (``no_curriculum`` is ``oneshot`` unless the student's teacher schedule is not
    ``final``, so by default it is not run twice)."""
    student = spec.student
    common = {
        "curriculum": {"kind": "none"},
        "distill": {
            "loss": student.distill.loss,
            "temperature": student.distill.temperature,
            "alpha": student.distill.alpha,
            "temperature_schedule": {"kind": "constant"},
        },
        "teacher_schedule": student.teacher_schedule.model_dump(),
    }
    arms = {
        "no_curriculum": common,
        "labels_only": _merge(common, {"distill": {"alpha": 1.0}}),
        "oneshot": _merge(common, {"teacher_schedule": {"kind": "final"}}),
    }
    out: dict[str, dict[str, Any]] = {}
    for name in spec.baselines:
        if arms[name] not in out.values():
            out[name] = arms[name]
    return {name: {**config, "arm": f"baseline:{name}"} for name, config in out.items()}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


TRIAL_ID_ATTR = "trial_id"  # the user attribute naming a study trial's row (``trial_id``)


@contextlib.contextmanager
def _for_the_dashboard() -> Iterator[None]:
    """A write that only serves viewers of the study (a user attribute, intermediate values):
    one that fails is logged, never the end of the sweep."""
    try:
        yield
    except (optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        logging.getLogger(__name__).warning("study: not written for the dashboard: %s", exc)


def write_intermediate_values(trial: optuna.Trial, values: dict[int, float]) -> None:
    """``values`` (``{step: value}``) as ``trial``'s intermediate values, in one storage write:
    one transaction for an RDB storage, one appended batch for a journal (a write per value
    costs a commit or an fsync each: ~10 ms on SQLite). Any other storage, or an Optuna whose
    internals differ, gets Optuna's own ``trial.report`` per value."""
    if not values:
        return
    if trial.storage.get_trial(trial._trial_id).state.is_finished():  # a batch would be refused
        # part-way (a journal replaying it would raise at each of its values)
        raise optuna.exceptions.UpdateFinishedTrialError(
            f"study trial {trial.number} has already finished and can not be updated"
        )
    storage = trial.storage
    backend = getattr(storage, "_backend", None)  # Optuna wraps an RDBStorage in a cache
    storage = backend if isinstance(backend, optuna.storages.RDBStorage) else storage
    try:
        if isinstance(storage, optuna.storages.RDBStorage):
            return _rdb_values(storage, trial._trial_id, values)
        if isinstance(storage, optuna.storages.JournalStorage):
            return _journal_values(storage, trial._trial_id, values)
    except (AttributeError, ImportError):  # another Optuna's internals: one write per value
        pass
    for step, value in sorted(values.items()):
        trial.report(value, step)


def _rdb_values(storage, trial_id: int, values: dict[int, float]) -> None:
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        for step, value in sorted(values.items()):
            storage._set_trial_intermediate_value_without_commit(session, trial_id, step, value)


def _journal_values(storage, trial_id: int, values: dict[int, float]) -> None:
    from optuna.storages.journal._storage import JournalOperation

    with storage._thread_lock:
        worker = storage._replay_result.worker_id
        op = JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE
        storage._backend.append_logs([
            {"op_code": op, "worker_id": worker, "trial_id": trial_id, "step": step,
             "intermediate_value": value}
            for step, value in sorted(values.items())
        ])  # fmt: skip
        storage._sync_with_backend()


class WithBaselines(Searcher):
    """Suggest the fixed baseline configs first, then delegate to ``inner`` (Optuna), whose
    flat dotted suggestions become the nested config Tune hands the trainable.

    Baseline results never reach the study (they are in the trials table, ``config.arm`` =
    ``baseline:<name>``, only): the sampler models only its own space, and a baseline
    outside the space's bounds (e.g. ``alpha = 1``) cannot confuse it. The study is told
    each trial's final result only once the trials table holds the trial's row (:meth:`tell`,
    called by the sink): Tune completes a trial in the searcher before its callbacks, so a
    driver killed between the two would leave a study trial told but without a row, which a
    resumed sweep counts as not run and runs again. The other way round the resume settles
    the still-running study trial from the row (``_resume.plan_resume``).

    For optuna-dashboard and the user's own study queries, each study trial carries its row's
    ``trial_id`` as the user attribute :data:`TRIAL_ID_ATTR` (set when it is suggested), and
    the searched metric at each reported ``step`` as its intermediate values (one objective
    only: Optuna keeps none for several). These are buffered and written in batches
    (:func:`write_intermediate_values`): every :attr:`report_batch` reports of a trial and
    when it is told."""

    report_batch = 16  # a trial's buffered intermediate values written together
    _warned_no_study_trials = False  # set on the instance once said (see _study_trial)

    def __init__(self, inner: Searcher, baselines: list[dict[str, Any]]) -> None:
        super().__init__()
        self._metric, self._mode = inner.metric, inner.mode  # lists when multi-objective
        self.inner = inner
        self.pending = [copy.deepcopy(b) for b in baselines]
        self.baseline_trials: set[str] = set()
        self.untold: dict[str, tuple[dict | None, bool]] = {}  # completed, row not yet written
        self.reported: dict[str, dict[int, float]] = {}  # per trial: values not yet written

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Tune writes it into ``tuner.pkl``) without the study: its storage holds a
        database URL, maybe with a password, and a resumed sweep reopens the study anyway."""
        return {**self.__dict__, "inner": None}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.pending:
            self.baseline_trials.add(trial_id)
            return self.pending.pop(0)
        suggested = self.inner.suggest(trial_id)  # {"distill.temperature": 4.0, ...}
        study_trial = self._study_trial(trial_id)
        if isinstance(suggested, dict) and study_trial is not None:
            with _for_the_dashboard():
                study_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
        return nest(suggested) if isinstance(suggested, dict) else suggested

    def _study_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial Ray's OptunaSearch asked for ``trial_id`` (None for a baseline).
        A Ray whose OptunaSearch keeps them elsewhere gets no dashboard attributes, said once
        in the log."""
        study_trials = getattr(self.inner, "_ot_trials", None)
        if study_trials is None:
            if not self._warned_no_study_trials:
                self._warned_no_study_trials = True
                logging.getLogger(__name__).warning(
                    "study: %s has no `_ot_trials` (another Ray version?): study trials get "
                    "no %r attribute and no intermediate values for the dashboard",
                    type(self.inner).__name__, TRIAL_ID_ATTR,
                )  # fmt: skip
            return None
        return study_trials.get(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study's storage is the searcher's state (see ``_resume``)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a resumed sweep reopens the study (see ``_resume``)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Buffered as an intermediate value (``step`` -> the searched metric), not reported
        one by one: each report would be a write to the study's storage. (Optuna's pruners,
        which read them, are not used: Tune's schedulers stop trials.)"""
        if not isinstance(self._metric, str) or trial_id in self.baseline_trials:
            return
        step, value = result.get("step", result.get("training_iteration")), result.get(self._metric)
        if not isinstance(step, int) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):
            return
        pending = self.reported.setdefault(trial_id, {})
        pending[step] = float(value)
        if len(pending) >= self.report_batch:
            self._write_reported(trial_id)

    def _write_reported(self, trial_id: str) -> None:
        values, study_trial = self.reported.pop(trial_id, {}), self._study_trial(trial_id)
        if values and study_trial is not None:
            with _for_the_dashboard():
                write_intermediate_values(study_trial, values)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        if trial_id not in self.baseline_trials:
            self.untold[trial_id] = (result, error)

    def tell(self, trial_id: str) -> None:
        """Tell the study a completed trial's result: its row is in the trials table."""
        if trial_id in self.untold:
            result, error = self.untold.pop(trial_id)
            self._write_reported(trial_id)
            self.inner.on_trial_complete(trial_id, result=result, error=error)
