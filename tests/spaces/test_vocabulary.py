"""The config's kinds and the space agree: every kind is drawable or declared unsearchable,
every choice the space offers is a kind of the config, and every kind is documented."""

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from spaces import NOT_SEARCHABLE, PARAMETERS, SpaceBounds
from trainables import config
from trainables.config import StudentConfig, kinds

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()

# Literal-typed settings of the student config that the space deliberately does not draw.
NOT_DRAWN = {
    "data.kind", "task.kind", "model.kind", "optim.kind", "device", "precision",
    "curriculum.prune_by",
    "curriculum.self_paced.growth", "distill.alpha_schedule.kind",
}  # fmt: skip


def _literal_leaves(model: type[BaseModel], prefix: str = "") -> dict[str, tuple]:
    """``{dotted path: allowed values}`` of every Literal-typed field (through nested models)."""
    out = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(_literal_leaves(annotation, f"{prefix}{name}."))
        elif typing.get_origin(annotation) is typing.Literal:
            out[f"{prefix}{name}"] = typing.get_args(annotation)
    return out


def _accepted(parameter) -> set[str]:
    """The values the space's choice list for ``parameter`` accepts, found by asking it."""
    accepted = set()
    for value in ["__not_a_kind__", *_literal_leaves(StudentConfig)[parameter.path]]:
        try:
            SpaceBounds(**{parameter.bounds: [value]})
        except ValidationError:
            continue
        accepted.add(value)
    return accepted


@pytest.mark.parametrize("parameter", [p for p in PARAMETERS if p.draw == "choice"], ids=str)
def test_every_kind_of_the_config_is_in_the_space_or_declared_unsearchable(parameter):
    config_kinds = set(_literal_leaves(StudentConfig)[parameter.path])
    unsearchable = set(NOT_SEARCHABLE.get(parameter.path, {}))
    assert _accepted(parameter) == config_kinds - unsearchable


def test_every_literal_setting_is_drawn_or_declared_not_drawn():
    drawn = {p.path for p in PARAMETERS if p.draw == "choice"}
    assert set(_literal_leaves(StudentConfig)) == drawn | NOT_DRAWN
    assert not drawn & NOT_DRAWN


def test_every_range_parameter_names_a_numeric_config_setting():
    for parameter in PARAMETERS:
        if parameter.draw in ("float", "int"):
            low, _ = getattr(SpaceBounds(), parameter.bounds)
            # the config accepts the default range's low end at that path (corners are checked)
            SpaceBounds(**{parameter.bounds: (low, low)})


VOCABULARY = [
    config.CurriculumKind, config.Order, config.ScoreKind, config.PacingKind,
    config.SPLRegularizer, config.Progression, config.LossForm, config.TeacherScheduleKind,
    config.ScheduleKind, config.SchedulerKind, config.SearchAlgorithm,
]  # fmt: skip


@pytest.mark.parametrize("literal", VOCABULARY, ids=lambda lit: "-".join(kinds(lit)[:2]))
def test_every_kind_is_documented_in_the_readme(literal):
    missing = [kind for kind in kinds(literal) if f"`{kind}`" not in README]
    assert not missing, f"README does not document {missing}"


def test_space_top_ks_is_searched_though_distill_top_k_is_unset_by_default():
    import optuna

    from spaces import preset
    from spaces._distillation import suggestion

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(20):
        trial = study.ask()
        drawn.append(suggestion(trial, preset("quickstart", top_ks=[None, 8]), None).get(
            "distill.top_k", "not drawn"))  # fmt: skip
        study.tell(trial, 0.0)
    assert set(drawn) == {None, 8}
    labels_only = preset("quickstart", top_ks=[None, 8], alpha=(1.0, 1.0))
    trial = study.ask()
    assert "distill.top_k" not in suggestion(trial, labels_only, None)  # no teacher: unused
    unset = suggestion(study.ask(), preset("quickstart"), None)
    assert "distill.top_k" not in unset  # not searched: the student's own value stays
