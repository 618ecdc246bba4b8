import optuna
import pytest
from pydantic import ValidationError

from spaces import PRESETS, SpaceBounds, distillation_space, preset, suggest_config
from trainables.config import CurriculumKind, StudentConfig, kinds

CURRICULUM_KINDS = kinds(CurriculumKind)

BASE = StudentConfig(teacher_bank="/tmp/teacher").model_dump()

# One FixedTrial per branch of the space: every curriculum kind, each pacing and schedule.
BRANCHES = {
    "none": {"curriculum.kind": "none"},
    "paced": {
        "curriculum.kind": "paced", "curriculum.order": "hard_first", "curriculum.score": "el2n",
        "curriculum.pacing.kind": "competence", "curriculum.pacing.start": 0.1, "curriculum.pacing.full_at": 0.4,
        "curriculum.pacing.power": 3.0,
    },
    "paced_step": {
        "curriculum.kind": "paced", "curriculum.order": "easy_first", "curriculum.score": "loss",
        "curriculum.pacing.kind": "step", "curriculum.pacing.start": 0.1, "curriculum.pacing.full_at": 0.4,
        "curriculum.pacing.num_steps": 3,
    },
    "paced_exp_steps": {
        "curriculum.kind": "paced", "curriculum.order": "random",
        "curriculum.pacing.kind": "exp_steps", "curriculum.pacing.start": 0.05, "curriculum.pacing.inc": 2.5,
    },
    "confidence": {"curriculum.kind": "confidence", "curriculum.beta_max": 3.0},
    "self_paced": {
        "curriculum.kind": "self_paced", "curriculum.pacing.kind": "root", "curriculum.pacing.start": 0.3,
        "curriculum.pacing.full_at": 0.6, "curriculum.self_paced.regularizer": "mixture",
    },
    "focal": {"curriculum.kind": "focal", "curriculum.focal_gamma": 1.5},
    "importance": {"curriculum.kind": "importance"},
    "rho": {"curriculum.kind": "rho"},
    "staged": {
        "curriculum.kind": "staged", "curriculum.order": "easy_first", "curriculum.score": "margin",
        "curriculum.progression": "plateau", "curriculum.gate_patience": 2,
    },
    "staged_threshold": {
        "curriculum.kind": "staged", "curriculum.order": "easy_first", "curriculum.score": "entropy",
        "curriculum.progression": "threshold", "curriculum.gate_threshold": 0.8,
    },
}  # fmt: skip
SCHEDULES = {
    "constant": {"distill.temperature_schedule.kind": "constant"},
    "cosine": {
        "distill.temperature_schedule.kind": "cosine",
        "distill.temperature_schedule.end": 1.5,
    },
    "ctkd": {"distill.temperature_schedule.kind": "ctkd"},
}


COMMON = {
    "distill.temperature": 3.0, "distill.alpha": 0.4, "distill.loss": "hinton",
    "teacher_schedule.kind": "final",
}  # fmt: skip


def _fixed(params):
    return optuna.trial.FixedTrial({**COMMON, **params})


@pytest.mark.parametrize("branch", list(BRANCHES))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_every_branch_builds_a_valid_config(branch, schedule):
    trial = _fixed({**BRANCHES[branch], **SCHEDULES[schedule]})
    cfg = StudentConfig.model_validate(suggest_config(trial, SpaceBounds(), BASE))
    assert cfg.curriculum.kind == BRANCHES[branch]["curriculum.kind"]
    assert cfg.distill.temperature_schedule.kind == schedule
    # the space asked for exactly the parameters of this branch, nothing else; one-choice
    # lists (the default loss and teacher schedule) are fixed, not drawn
    drawn = set(BRANCHES[branch]) | set(SCHEDULES[schedule]) | set(COMMON)
    assert set(trial.params) == drawn - {"distill.loss", "teacher_schedule.kind"}
    assert (cfg.distill.loss, cfg.teacher_schedule.kind) == ("hinton", "final")


@pytest.mark.parametrize(
    "teacher",
    [
        {"teacher_schedule.kind": "lockstep"},
        {"teacher_schedule.kind": "two_shot", "teacher_schedule.switch_at": 0.2},
        {"teacher_schedule.kind": "uniform_k", "teacher_schedule.k": 3},
    ],
)
def test_teacher_schedule_branches(teacher):
    params = {**BRANCHES["none"], **SCHEDULES["constant"], "distill.loss": "progressive", **teacher}
    trial = _fixed(params)
    bounds = SpaceBounds(
        losses=["hinton", "progressive"],
        teacher_schedules=["final", "lockstep", "two_shot", "uniform_k"],
    )
    cfg = StudentConfig.model_validate(suggest_config(trial, bounds, BASE))
    assert cfg.teacher_schedule.kind == teacher["teacher_schedule.kind"]
    assert cfg.distill.loss == "progressive"
    assert set(trial.params) == set(COMMON) | set(params)


def test_the_all_preset_spans_every_kind_and_base_is_not_mutated():
    assert set(preset("all").curricula) == set(CURRICULUM_KINDS)
    assert set(PRESETS) == {"all", "quickstart"}
    suggest_config(_fixed({**BRANCHES["paced"], **SCHEDULES["constant"]}), SpaceBounds(), BASE)
    assert BASE["curriculum"]["kind"] == "none"


def test_sampled_configs_are_valid_and_temperature_is_log_scale():
    bounds = SpaceBounds(prune_fraction=(0.0, 0.3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds = set()
    for _ in range(150):
        trial = study.ask()
        distillation_space(trial, bounds)
        assert trial.distributions["distill.temperature"].log
        cfg = StudentConfig.model_validate(
            suggest_config(optuna.trial.FixedTrial(trial.params), bounds, BASE)
        )
        kinds.add(cfg.curriculum.kind)
        assert cfg.curriculum.prune_fraction <= 0.3
        study.tell(trial, 0.0)
    # digits have no sources: the all preset leaves the mixture out
    assert kinds == set(CURRICULUM_KINDS) - {"mixture"}


def test_mixture_weights_are_searched_per_source_and_normalised_by_the_config():
    """With sources, the all preset draws the mixture; ``mixture_sources`` adds one
    log-uniform weight per source at ``curriculum.mixture.weights.<source>``."""
    base = {**BASE, "data": {"kind": "digits", "noisy_source": 0.5}}
    bounds = SpaceBounds(mixture_sources=["clean", "noisy"], mixture_schedules=["constant"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    mixtures = 0
    for _ in range(80):
        trial = study.ask()
        distillation_space(trial, bounds, base)
        cfg = StudentConfig.model_validate(
            suggest_config(optuna.trial.FixedTrial(trial.params), bounds, base)
        )
        if cfg.curriculum.kind == "mixture":
            mixtures += 1
            weights = cfg.curriculum.mixture.weights
            assert set(weights) == {"clean", "noisy"}
            for source in ("clean", "noisy"):
                dist = trial.distributions[f"curriculum.mixture.weights.{source}"]
                assert dist.log and (dist.low, dist.high) == (0.01, 1.0)
                assert weights[source] == trial.params[f"curriculum.mixture.weights.{source}"]
        else:
            assert not any("mixture" in name for name in trial.params)
        study.tell(trial, 0.0)
    assert mixtures >= 3


def test_shapley_is_left_out_of_a_language_model_space():
    base = {**BASE, "data": {"kind": "pcfg"}, "task": {"kind": "causal_lm"},
            "model": {"kind": "transformer"}}  # fmt: skip
    assert "shapley" in SpaceBounds().scores
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        distillation_space(trial, SpaceBounds(curricula=["paced"], orders=["easy_first"]), base)
        assert "shapley" not in trial.distributions["curriculum.score"].choices
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", (0.0, 2.0), "0.0 is not a valid distill.temperature: .*greater than 0"),
        ("alpha", (0.5, 1.5), "1.5 is not a valid distill.alpha: .*less than or equal to 1"),
        ("temperature_end", (0.0, 2.0), "0.0 is not a valid distill.temperature_schedule.end"),
        ("step_count", (1, 200), "200 is not a valid curriculum.pacing.num_steps"),
        ("start", (0.6, 0.2), "low <= high"),
        ("teacher_schedules", ["final", "explicit"], "'explicit' cannot be searched"),
        ("curricula", ["none", "none"], "duplicates"),
        ("curricula", ["cosine"], "'none', 'paced'"),
        ("curricula", [], "at least 1"),
        ("orders", ["sideways"], "'easy_first', 'hard_first' or 'random'"),
        ("prune_fraction", (0.0, 0.95), "0.95 is not a valid curriculum.prune_fraction"),
    ],
)
def test_bounds_reject_bad_ranges(field, value, message):
    with pytest.raises(ValidationError, match=message):
        SpaceBounds(**{field: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="all, quickstart"):
        preset("everything")
