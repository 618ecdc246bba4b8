"""Bandit and mixture curricula through the real student loop on digits (no Ray): what they
report, that they resume exactly, that held-out rows stay held out, and how they behave on
data with a random-label source."""

import numpy as np
import pytest

from trainables.bank import build_bank
from trainables.config import (
    BanditConfig,
    CurriculumConfig,
    DataConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
)
from trainables.loops import build_student, repeated_loop, student_loop, teacher_loop, train_step


def _bank(home, data: DataConfig) -> str:
    cfg = TeacherConfig(
        data=data, optim=OptimConfig(lr=1e-3, batch_size=64, steps=300), eval_every=50,
        output_dir=str(home / "run"),
    )  # fmt: skip
    for _ in teacher_loop(cfg):
        pass
    build_bank(cfg, home / "run", home / "bank", use_ray=False, progress=lambda line: None)
    return str(home / "bank")


@pytest.fixture(scope="module")
def digits_bank(tmp_path_factory):
    return _bank(tmp_path_factory.mktemp("digits"), DataConfig())


NOISY = DataConfig(noisy_source=0.5)


@pytest.fixture(scope="module")
def noisy_bank(tmp_path_factory):
    """Digits whose training rows are half a source ``noisy`` of random labels."""
    return _bank(tmp_path_factory.mktemp("noisy"), NOISY)


def _student(bank, curriculum, *, data=None, steps=200, **kw):
    return StudentConfig(
        data=data or DataConfig(), teacher_bank=bank, eval_every=50,
        optim=OptimConfig(steps=steps, batch_size=32, lr=3e-3), curriculum=curriculum, **kw,
    )  # fmt: skip


def _records(loop):
    return [record for record, _ in loop]


BANDITS = [
    BanditConfig(),
    BanditConfig(policy="thompson", reward="self_prediction_gain"),
    BanditConfig(reward="target_prediction_gain", buckets=3),
]


@pytest.mark.parametrize("bandit", BANDITS, ids=lambda b: f"{b.policy}-{b.reward}")
def test_a_bandit_reports_its_arm_probabilities_and_resumes_exactly(digits_bank, bandit):
    cfg = _student(digits_bank, CurriculumConfig(kind="bandit", bandit=bandit))
    whole = _records(student_loop(cfg))
    names = [f"confidence:{i + 1}/{bandit.buckets}" for i in range(bandit.buckets)]
    for record in whole:
        assert record["arm_names"] == names
        probs = np.array(record["arm_probs"])
        assert probs.sum() == pytest.approx(1.0) and (probs > 0).all()
    assert whole[-1]["val_accuracy"] > 0.85
    moved = [r["arm_probs"] for r in whole]
    assert moved[0] != moved[-1]  # the policy learned something over the run
    for record, run in student_loop(cfg):
        if record["step"] == 100:
            state = run.state_dict()
            break
    resumed = _records(student_loop(cfg, resume_from=state))
    assert [(r["val_loss"], r["arm_probs"]) for r in resumed] == [
        (r["val_loss"], r["arm_probs"]) for r in whole[2:]
    ]


def test_held_out_reward_rows_are_never_trained_on(digits_bank):
    cfg = _student(
        digits_bank,
        CurriculumConfig(kind="bandit", bandit=BanditConfig(reward="self_prediction_gain")),
    )
    run = build_student(cfg)
    held = np.concatenate(run.reward_rows)
    assert np.array_equal(np.sort(held), run.holdout)
    assert len(run.holdout) == round(0.1 * len(run.train))
    assert not np.isin(run.sampler.pool, run.holdout).any()
    seen = []
    original = run.sampler.next_batch

    def spy(scorer=None):
        batch = original(scorer)
        seen.append(batch.indices)
        return batch

    run.sampler.next_batch = spy
    for step in range(1, 41):
        train_step(run, step)
    assert not np.isin(np.concatenate(seen), run.holdout).any()
    # each arm's held-out rows lie in that arm's difficulty range
    difficulty = run.targets.teacher.scores["confidence"]
    for arm, rows in enumerate(run.reward_rows):
        trained = run.sampler.arm_rows(arm)
        if arm > 0:
            assert difficulty[rows].min() >= difficulty[run.sampler.arm_rows(arm - 1)].max()
        assert (
            difficulty[rows].max() <= difficulty[trained].max() or arm == len(run.reward_rows) - 1
        )


def test_repeats_average_the_arm_probabilities(digits_bank):
    cfg = _student(digits_bank, CurriculumConfig(kind="bandit"), repeats=2)
    seeds = [
        _records(student_loop(cfg.model_copy(update={"seed": s, "repeats": 1}))) for s in (0, 1)
    ]
    together = _records(repeated_loop(cfg))
    for mean, a, b in zip(together, *seeds, strict=True):
        assert mean["arm_probs"] == pytest.approx(
            [(x + y) / 2 for x, y in zip(a["arm_probs"], b["arm_probs"], strict=True)]
        )
        assert mean["arm_names"] == a["arm_names"]


def test_other_curricula_report_no_arms(digits_bank):
    record = _records(student_loop(_student(digits_bank, CurriculumConfig(), steps=50)))[-1]
    assert "arm_probs" not in record and "arm_names" not in record
