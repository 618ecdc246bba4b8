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
    MixtureConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
)
from trainables.loops import build_student, repeated_loop, student_loop, teacher_loop, train_step
from trainables.loops._common import load_data


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
_SOURCES = load_data(NOISY).source_train  # each training row's source: 0 clean, 1 noisy


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
    BanditConfig(reward="prediction_gain"),
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


@pytest.mark.parametrize("policy", ["exp3s", "thompson"])
def test_a_bandit_over_sources_turns_away_from_the_random_label_source(noisy_bank, policy):
    """Half the training rows are a source of random labels: with the default reward (the
    self prediction gain), the probability of drawing it falls well below uniform (0.5)
    within the run, for every seed."""
    lowest = []
    for seed in range(3):
        cfg = _student(
            noisy_bank,
            CurriculumConfig(
                kind="bandit", bandit=BanditConfig(policy=policy, arms_column="source")
            ),
            data=NOISY, steps=300, seed=seed,
        )  # fmt: skip
        records = _records(student_loop(cfg.model_copy(update={"eval_every": 25})))
        assert records[0]["arm_names"] == ["clean", "noisy"]
        lowest.append(min(r["arm_probs"][1] for r in records))
    assert max(lowest) < 0.25, lowest


def _mixture(noisy_bank, mixture, steps=200):
    return _student(
        noisy_bank, CurriculumConfig(kind="mixture", mixture=mixture), data=NOISY, steps=steps
    )


def _batches(cfg, steps):
    run = build_student(cfg)
    seen, original = [], run.sampler.next_batch

    def spy(scorer=None):
        batch = original(scorer)
        seen.append(batch.indices)
        return batch

    run.sampler.next_batch = spy
    for step in range(1, steps + 1):
        train_step(run, step)
    return run, seen


def test_a_linear_mixture_reports_its_weights_at_each_evaluation(noisy_bank):
    cfg = _mixture(
        noisy_bank,
        MixtureConfig(schedule="linear", weights={"clean": 1.0}, end_weights={"noisy": 3.0}),
    )
    records = _records(student_loop(cfg))
    for record in records:  # after step s, the next batch's weights: progress s / 200
        p = record["step"] / 200
        assert record["arm_names"] == ["clean", "noisy"]
        assert record["arm_probs"] == pytest.approx([1 - p, p])


def test_a_constant_mixture_draws_its_sources_in_proportion(noisy_bank):
    cfg = _mixture(noisy_bank, MixtureConfig(schedule="constant", weights={"clean": 4, "noisy": 1}))
    _, seen = _batches(cfg, 100)
    assert all(len(set(b)) == len(b) == 32 for b in seen)  # whole batches, no repeats
    noisy = _SOURCES[np.concatenate(seen)] == 1
    assert noisy.mean() == pytest.approx(0.2, abs=0.03)  # 3,200 rows: sd 0.007


def test_a_source_without_weight_is_never_drawn(noisy_bank):
    _, seen = _batches(
        _mixture(noisy_bank, MixtureConfig(schedule="constant", weights={"clean": 1.0})), 60
    )
    assert (_SOURCES[np.concatenate(seen)] == 0).all()


def test_unknown_source_names_are_refused_in_one_line(noisy_bank):
    cfg = _mixture(noisy_bank, MixtureConfig(schedule="constant", weights={"clen": 1.0}))
    with pytest.raises(
        ValueError,
        match=r"curriculum.mixture.weights: unknown source\(s\) 'clen'; the data's sources: clean, noisy",
    ):
        build_student(cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["bandit", "mixture"])
def test_on_a_gpu_bandit_and_mixture_curricula_learn_and_resume(noisy_bank, kind):
    curriculum = CurriculumConfig(
        kind=kind, bandit=BanditConfig(arms_column="source"),
        mixture=MixtureConfig(schedule="linear", weights={"clean": 1}, end_weights={"noisy": 1}),
    )  # fmt: skip
    cfg = _student(noisy_bank, curriculum, data=NOISY, device="cuda")
    whole = _records(student_loop(cfg))
    assert whole[-1]["val_accuracy"] > 0.6
    for record, run in student_loop(cfg):
        if record["step"] == 100:
            state = run.state_dict()
            break
    resumed = _records(student_loop(cfg, resume_from=state))
    for got, want in zip(resumed, whole[2:], strict=True):  # GPU kernels: equal to rounding
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-4)
        assert got["arm_probs"] == pytest.approx(want["arm_probs"], rel=1e-4)


def test_a_bandit_state_carries_into_changed_settings_as_pbt_explores(digits_bank):
    """PBT copies a donor's state into a trial with mutated settings: the policy's learned
    weights come along, the new settings apply from there on, and the state round-trips
    through the checkpoint format (``weights_only`` loading)."""
    import torch

    cfg = _student(digits_bank, CurriculumConfig(kind="bandit"))
    for record, run in student_loop(cfg):
        if record["step"] == 100:
            state = run.state_dict()
            break
    weights = np.array(state["sampler"]["policy"]["weights"])
    assert np.ptp(weights) > 0  # it learned
    torch.save(state, digits_bank + "-state.pt")
    state = torch.load(digits_bank + "-state.pt", weights_only=True)
    explored = cfg.model_copy(
        update={"curriculum": CurriculumConfig(kind="bandit", bandit=BanditConfig(exploration=0.3))}
    )
    run = build_student(explored)
    run.load_state_dict(state)
    softmax = np.exp(weights - weights.max()) / np.exp(weights - weights.max()).sum()
    assert run.sampler.probabilities() == pytest.approx(0.7 * softmax + 0.3 / len(weights))
    records = _records(student_loop(explored, resume_from=state))
    assert [r["step"] for r in records] == [150, 200]


_RANK = """
import json, os, sys
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from trainables.config import StudentConfig
from trainables.loops import student_loop

rank, out = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", rank=rank, world_size=2)
cfg = StudentConfig.model_validate_json(os.environ["CFG"])
records = [r for r, _ in student_loop(cfg, rank=rank, world_size=2, wrap_model=DistributedDataParallel)]
json.dump(records, open(f"{out}/{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("reward", ["prediction_gain", "self_prediction_gain"])
def test_two_workers_pick_the_same_arms_and_update_the_bandit_alike(noisy_bank, tmp_path, reward):
    """Data-parallel: each rank trains on its shard, so the ranks' own gains differ; they
    average them, so both draw the same arm every step and report the same probabilities."""
    import json
    import os
    import socket
    import subprocess
    import sys

    bandit = BanditConfig(arms_column="source", reward=reward)
    cfg = _student(
        noisy_bank, CurriculumConfig(kind="bandit", bandit=bandit), data=NOISY, steps=100
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CFG": cfg.model_dump_json(), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
    ranks = [
        subprocess.Popen([sys.executable, "-c", _RANK, str(r), str(tmp_path)], env=env)
        for r in (0, 1)
    ]
    assert [p.wait(timeout=300) for p in ranks] == [0, 0]
    zero, one = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert [r["arm_probs"] for r in zero] == [r["arm_probs"] for r in one]
    assert [r["val_loss"] for r in zero] == [r["val_loss"] for r in one]  # same parameters
    assert zero[-1]["arm_probs"] != zero[0]["arm_probs"]
    assert zero[-1]["samples_seen"] == 2 * 32 * 100


def test_buckets_of_a_score_with_many_ties_each_hold_their_share_of_the_holdout(digits_bank):
    """``forgetting`` counts take a few values shared by hundreds of rows: buckets are cut
    over the pool and the holdout sorted together (ties in row order), so every bucket has
    held-out rows for its self prediction gain."""
    cfg = _student(digits_bank, CurriculumConfig(kind="bandit", score="forgetting"))
    run = build_student(cfg)
    forgetting = run.targets.teacher.scores["forgetting"]
    assert np.unique(forgetting, return_counts=True)[1].max() > len(forgetting) / 5
    sizes = [len(a) + len(h) for a, h in zip(run.sampler.arms, run.reward_rows, strict=True)]
    assert max(sizes) - min(sizes) <= 1 and all(len(h) > 0 for h in run.reward_rows)
    for easier, harder in zip(run.reward_rows, run.reward_rows[1:], strict=False):
        assert forgetting[easier].max() <= forgetting[harder].min()
