import optuna
import pytest
from pydantic import ValidationError

from spaces import SpaceBounds, distillation_space, suggest_config
from trainables.config import StudentConfig

BASE = StudentConfig(teacher_outputs="/tmp/teacher").model_dump()


def test_none_branch_builds_a_valid_config_without_pacing_parameters():
    trial = optuna.trial.FixedTrial(
        {"curriculum/kind": "none", "distill/temperature": 2.0, "distill/alpha": 0.3}
    )
    cfg = StudentConfig.model_validate(suggest_config(trial, SpaceBounds(), BASE))
    assert (cfg.curriculum.kind, cfg.distill.temperature, cfg.distill.alpha) == ("none", 2.0, 0.3)
    assert set(trial.params) == {"curriculum/kind", "distill/temperature", "distill/alpha"}


def test_linear_branch_builds_a_valid_config_with_pacing_parameters():
    params = {"curriculum/kind": "linear", "curriculum/start": 0.3, "curriculum/full_at": 0.7,
              "distill/temperature": 5.0, "distill/alpha": 0.9}  # fmt: skip
    cfg = StudentConfig.model_validate(
        suggest_config(optuna.trial.FixedTrial(params), SpaceBounds(), BASE)
    )
    assert (cfg.curriculum.kind, cfg.curriculum.start, cfg.curriculum.full_at) == (
        "linear",
        0.3,
        0.7,
    )
    assert BASE["curriculum"]["kind"] == "none"  # the base config is not mutated


def test_distributions_temperature_is_log_scale_and_within_bounds():
    bounds = SpaceBounds(curricula=["linear"], temperature=(0.5, 16.0), alpha=(0.25, 0.75))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        distillation_space(trial, bounds)
        assert trial.distributions["distill/temperature"].log
        assert 0.5 <= trial.params["distill/temperature"] <= 16.0
        assert 0.25 <= trial.params["distill/alpha"] <= 0.75
        StudentConfig.model_validate(
            suggest_config(optuna.trial.FixedTrial(trial.params), bounds, BASE)
        )
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", (0.0, 2.0), "within \\(0, 100\\]"),
        ("alpha", (0.5, 1.5), "within \\[0, 1\\]"),
        ("start", (0.6, 0.2), "low <= high"),
        ("curricula", ["none", "none"], "duplicates"),
        ("curricula", ["cosine"], "'none' or 'linear'"),
        ("curricula", [], "at least 1"),
    ],
)
def test_bounds_reject_bad_ranges(field, value, message):
    with pytest.raises(ValidationError, match=message):
        SpaceBounds(**{field: value})
