"""Crash safety of a sweep: its manifest, resume-or-start, and the shared-storage probe."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import secrets
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from analysis import CorruptResultsError, ResultsError, load_curves, load_trials
from analysis.tables import RESULTS_FORMAT, SWEEP_MANIFEST, config_column
from search.errors import StorageError, SweepExistsError
from search.spec import SweepSpec

# Spec fields that may change between runs of one sweep (a bigger budget, another cluster).
_MUTABLE = {"num_samples", "time_budget_s", "resources", "storage", "name"}
_PACKAGES = ("kd-schedule-search", "ray", "optuna", "torch", "pyarrow", "pydantic", "numpy")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _fingerprint(spec_json: dict[str, Any]) -> str:
    fixed = {k: v for k, v in spec_json.items() if k not in _MUTABLE}
    fixed["results_format"] = RESULTS_FORMAT  # an older sweep differs in "format"
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_revision() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


@dataclass
class Manifest:
    """``<sweep>/manifest.json``: the spec, its fingerprint, package versions, git revision,
    and one ``{started, ended}`` entry per run (``ended`` null: that run was interrupted)."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def open(cls, spec: SweepSpec) -> Manifest:
        """The sweep's manifest, new or existing; :class:`SweepExistsError` if the directory
        holds a sweep started from a different spec (or results without a manifest).

        The spec is stored, and fingerprinted, with credentials redacted
        (:meth:`SweepSpec.public_json`): the file is world-readable, a hash of a password can be
        brute-forced, and a rotated password does not make the sweep another spec. A manifest
        written before redaction is accepted and rewritten without its password."""
        path = spec.sweep_dir / SWEEP_MANIFEST
        spec_json = spec.public_json()
        fingerprint = _fingerprint(spec_json)
        if path.is_file():
            data = json.loads(path.read_text())
            unredacted = _fingerprint(spec.model_dump(mode="json"))
            if data.get("fingerprint") == unredacted != fingerprint:
                data.update(fingerprint=fingerprint, spec=spec_json)
                cls(path, data)._write()
            if data.get("fingerprint") != fingerprint:
                old = data.get("spec", {})
                changed = sorted(
                    k for k in set(old) | set(spec_json)
                    if k not in _MUTABLE and old.get(k) != spec_json.get(k)
                )  # fmt: skip
                raise SweepExistsError(
                    f"name: sweep {spec.name!r} in {spec.sweep_dir} was started from another "
                    f"spec (differs in: {', '.join(changed) or 'format'}); choose another "
                    "--name, or run it with its original spec to resume it"
                )
            return cls(path, data)
        trials = spec.sweep_dir / "trials"
        if trials.is_dir() and any(trials.iterdir()):
            raise SweepExistsError(
                f"name: {spec.sweep_dir} holds results but no manifest.json; choose another "
                "--name or remove that directory"
            )
        data = {
            "sweep": spec.name, "fingerprint": fingerprint, "spec": spec_json,
            "versions": _versions(), "git_revision": _git_revision(), "created": _now(),
            "runs": [],
        }  # fmt: skip
        return cls(path, data)

    @property
    def runs(self) -> int:
        return len(self.data["runs"])

    def begin(self) -> None:
        self.data["runs"].append({"started": _now(), "ended": None, "host": platform.node()})
        self._write()

    def end(self) -> None:
        self.data["runs"][-1]["ended"] = _now()
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)


@dataclass
class ResumePlan:
    run: int  # index of this run of the sweep (0: the first)
    done: int = 0  # trials with a row in the trials table (finished or failed)
    remaining: int = 0  # searched trials still to run
    done_arms: set[str] = field(default_factory=set)  # baseline arms already run
    stopped: int = 0  # trials an earlier run's experiment stopped (they run again)


def check_results(sweep_dir: Path) -> None:
    """Read the sweep's trials and curves once: a damaged file raises
    :class:`~analysis.CorruptResultsError` naming it before anything starts."""
    trial_rows(sweep_dir)
    try:
        load_curves(sweep_dir)
    except CorruptResultsError:
        raise
    except ResultsError:  # no curves yet
        pass


def trial_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    try:
        return load_trials(sweep_dir).to_pylist()
    except CorruptResultsError:  # never taken for "no trials yet": that would run them again
        raise
    except ResultsError:  # no trial has finished yet
        return []


def plan_resume(spec: SweepSpec, study: optuna.Study, runs: int) -> ResumePlan:
    """What is left of the sweep, and the study made consistent with the trials table.

    Study trials left ``RUNNING`` by a killed driver are settled: one whose result reached the
    trials table is told that result; any other is marked failed and its parameters enqueued
    again, so it runs once more (it never finished) and no trial number is reused. Trials the
    experiment stopped (``STOPPED`` rows: time budget, Ctrl-C) count as not done, as do trials
    that failed reading a damaged teacher bank (the run that rebuilds it runs them again:
    their configuration is not at fault).
    """
    rows = trial_rows(spec.sweep_dir)
    searched = [row for row in rows if (row.get("config.arm") or "search") == "search"]
    _settle_interrupted(study, searched, spec.objective_metrics)
    # A trial the experiment stopped (time budget, Ctrl-C) did not end: it runs again.
    ended = [row for row in rows if row["status"] != "STOPPED" and not bank_damaged(row)]
    arms = [row.get("config.arm") or "search" for row in ended]
    return ResumePlan(
        run=runs,
        done=len(ended),
        remaining=spec.num_samples - arms.count("search"),
        done_arms={a.removeprefix("baseline:") for a in arms if a.startswith("baseline:")},
        stopped=len(rows) - len(ended),
    )


def bank_damaged(row: dict[str, Any]) -> bool:
    """Whether a trial failed because the teacher bank it read was damaged."""
    return row["status"] == "ERROR" and "BankCorruptError" in (row.get("error") or "")


def _settle_interrupted(
    study: optuna.Study, rows: list[dict[str, Any]], metrics: list[str]
) -> None:
    states = optuna.trial.TrialState
    told = [t.params for t in study.get_trials(deepcopy=False, states=(states.COMPLETE,))]
    # one row settles one study trial: not a row whose trial the study already knows, and
    # never from a trial that was asked but had no parameters yet (it matches any row)
    free = [r for r in rows if not any(_same_params(p, r) for p in told if p)]
    for trial in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        row = next((r for r in free if trial.params and _same_params(trial.params, r)), None)
        values = [row.get(m) for m in metrics] if row and row["status"] == "TERMINATED" else None
        if values and None not in values:
            free.remove(row)
            study.tell(trial.number, values if len(values) > 1 else values[0])
        else:
            study.tell(trial.number, state=states.FAIL)
            if trial.params:
                study.enqueue_trial(trial.params)


def _same_params(params: dict[str, Any], row: dict[str, Any]) -> bool:
    """Whether a trials row holds the study trial's parameters (both named by config path)."""
    return all(row.get(config_column(name)) == value for name, value in params.items())


@ray.remote(num_cpus=0)
def _probe(marker: str, token: str, node: str) -> bool:
    path = Path(marker)
    try:
        seen = path.read_text() == token
        Path(f"{marker}.{node}").write_text(token)
    except OSError:
        return False
    return seen


def probe_storage(sweep_dir: Path, timeout_s: float = 60.0) -> None:
    """On a multi-node cluster, check that every node reads and writes ``sweep_dir`` (where
    trials write results and read the teacher bank); :class:`StorageError` names the nodes
    that do not."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    marker = sweep_dir / f".probe-{token}"
    marker.write_text(token)
    refs = {
        n["NodeManagerAddress"] + ":" + n["NodeID"][:8]: _probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(str(marker), token, n["NodeID"][:8])
        for n in nodes
    }
    try:
        ok = ray.get(list(refs.values()), timeout=timeout_s)
        bad = [
            name for name, seen in zip(refs, ok, strict=True)
            if not seen or not Path(f"{marker}.{name.rsplit(':', 1)[1]}").is_file()
        ]  # fmt: skip
    finally:
        for path in sweep_dir.glob(f".probe-{token}*"):
            path.unlink(missing_ok=True)
    if bad:
        raise StorageError(
            f"storage: {sweep_dir} is not shared by every node (not visible on "
            f"{', '.join(bad)}); use a path all nodes mount (NFS, EFS, ...)"
        )
