"""Bad settings of the bandit and mixture curricula and of data sources, refused as a user
meets them: ``python -m search validate`` exits 2 with one line naming the field, the value
and what is allowed, before anything trains."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from analysis.tables import config_row, trials_schema
from search.configs import rebuild_config
from spaces import SpaceBounds, suggestion
from trainables.config import (
    CurriculumConfig,
    DataConfig,
    MixtureConfig,
    MixtureStage,
    StudentConfig,
    settings,
)

ROOT = Path(__file__).resolve().parents[2]
MIX = ROOT / "examples" / "data_mix.yaml"


def _validate(*overrides, cwd):
    sets = [arg for o in overrides for arg in ("--set", o)]
    return subprocess.run(
        [sys.executable, "-m", "search", "validate", str(MIX), *sets],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["space.mixture_sources=[clean, noisy, web]"],
         "space.mixture_sources: unknown source(s) 'web'; the data's sources are clean, noisy"),
        (["space.mixture_sources=null", "student.curriculum.mixture.weights={clen: 1}"],
         "student.curriculum.mixture.weights: unknown source(s) 'clen'"),
        (["space.mixture_sources=[c.en, noisy]"],
         "a searched source's weight is the parameter"),
        (["student.curriculum.bandit.exploration=0"],
         "exploration: exp3s needs exploration > 0"),
        (["data.noisy_source=null"],
         "student.curriculum.kind: 'mixture' needs data with sources"),
        (["space.mixture_schedules=[linear]", "space.mixture_sources=null"],
         "space.mixture_schedules: 'linear' anneals from weights to end_weights"),
        (["student.curriculum.kind=none", "space.curricula=[none]",
          "student.curriculum.mixture.weights={zz: 1}"], None),
        (["student.curriculum.mixture.schedule=constant", "student.curriculum.mixture.weights={0: 1}"],
         "student.curriculum.mixture.weights: unknown source(s) '0'"),
        (["data.noisy_source=null", "student.curriculum.kind=none", "space.mixture_sources=null"],
         "space.curricula: 'mixture' needs data with sources"),
        (["student.curriculum.mixture.weights={clean: -1}"],
         "source weights must be finite and >= 0"),
    ],
)  # fmt: skip
def test_bad_curriculum_settings_exit_2_in_one_line(tmp_path, overrides, expected):
    result = _validate(*overrides, cwd=tmp_path)
    if expected is None:  # mixture weights no trial can use are not checked
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(expected in line for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_the_example_specs_validate(tmp_path):
    result = _validate(cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_scheduled_tau_is_searched_and_a_hand_written_schedule_kept():
    base = {"data": {"kind": "digits", "noisy_source": 0.5}, "curriculum": {"kind": "mixture"}}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = suggestion(
        study.ask(), SpaceBounds(curricula=["mixture"], mixture_schedules=["temperature"]), base
    )
    assert {"curriculum.mixture.tau", "curriculum.mixture.tau_end"} <= set(drawn)
    linear = {"schedule": "linear", "weights": {"clean": 1}, "end_weights": {"noisy": 1}}
    own = {**base, "curriculum": {"kind": "mixture", "mixture": linear}}
    kept = suggestion(study.ask(), SpaceBounds(curricula=["mixture"], mixture_schedules=None), own)
    assert "curriculum.mixture.schedule" not in kept and not any("weights" in k for k in kept)


def test_a_staged_mix_round_trips_through_the_trials_table():
    cfg = StudentConfig(
        data=DataConfig(noisy_source=0.5),
        curriculum=CurriculumConfig(
            kind="mixture",
            mixture=MixtureConfig(
                schedule="stages", weights={"clean": 1, "noisy": 1},
                stages=[MixtureStage(at=0.5, weights={"clean": 1})],
            ),
        ),
    )  # fmt: skip
    row = config_row(settings(cfg), trials_schema(StudentConfig))
    assert row["config.curriculum.mixture.stages"] == '[{"at": 0.5, "weights": {"clean": 1.0}}]'
    rebuilt = rebuild_config({**row, "trial_id": "t"}, cfg.model_dump())
    assert rebuilt.curriculum.mixture == cfg.curriculum.mixture


def test_what_the_space_leaves_out_is_noted():
    from search.spec import load_spec

    every = load_spec(ROOT / "examples" / "all_curricula.yaml")
    assert every.space_notes() == [
        "the space leaves the mixture curriculum out: the data has no sources"
    ]
    assert load_spec(MIX).space_notes() == []
