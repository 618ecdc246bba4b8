"""Every model kind and task through the real training loops (PyTorch, no Ray): CNNs on
images, transformers on masked and next-token prediction, a user's module, a Hugging Face
model; every curriculum on sequences; exact resume of a transformer student."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from trainables.bank import build_bank, teacher_bank
from trainables.config import (
    CurriculumConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    StudentConfig,
    TaskConfig,
    TeacherConfig,
    TeacherScheduleConfig,
)
from trainables.data import IndexRows
from trainables.distill import open_bank
from trainables.loops import build_student, student_loop, teacher_loop
from trainables.models import ModelError

PCFG = DataConfig(kind="pcfg", seq_len=24, train_size=512, holdout_size=128, pcfg_levels=4)
MASKED = TaskConfig(kind="masked_lm", mask_rate=0.3)
TINY = ModelConfig(kind="transformer", width=16, depth=1, heads=2, max_length=32)


def _records(loop):
    return [record for record, _ in loop]


def _curve(record):
    return {k: v for k, v in record.items() if k != "wall_time_s"}


def _teach(cfg, bank):
    """Train ``cfg``'s teacher (its run at ``<bank>/teacher``, as ``teacher_bank`` puts it),
    build its bank at ``bank`` and return the teacher loop's records."""
    run = Path(bank) / "teacher"
    cfg = cfg.model_copy(update={"output_dir": str(run)})
    records = list(teacher_loop(cfg))
    build_bank(cfg, run, bank, use_ray=False)
    return records


@pytest.fixture(scope="module")
def pcfg_bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("pcfg") / "bank"
    cfg = TeacherConfig(
        data=PCFG, task=MASKED, model=ModelConfig(kind="transformer", width=32, depth=2, heads=2,
                                                  max_length=32),
        optim=OptimConfig(lr=3e-3, batch_size=64, steps=120), eval_every=40,
        checkpoint_every=40,
    )  # fmt: skip
    records = _teach(cfg, out)
    assert all(math.isfinite(r["val_perplexity"]) for r in records)
    return str(out)


def _student(bank, **kw):
    base = dict(
        data=PCFG, task=MASKED, model=TINY, teacher_bank=bank, eval_every=20,
        optim=OptimConfig(steps=40, batch_size=32, lr=3e-3), target_accuracy=0.99,
    )  # fmt: skip
    return StudentConfig(**{**base, **kw})


def test_the_bank_holds_per_token_outputs_and_sequence_scores(pcfg_bank):
    bank = open_bank(pcfg_bank)
    assert bank.outputs("train").dense().shape == (512, 24, 3) and bank.checkpoints == [40, 80, 120]
    assert set(bank.scores) == {
        "confidence", "margin", "loss", "entropy", "el2n", "forgetting", "length", "rarity"
    }  # fmt: skip
    for values in bank.scores.values():
        assert values.shape == (512,) and np.isfinite(values).all()
    assert len(set(bank.scores["length"])) > 1  # sequences of several lengths


@pytest.mark.parametrize(
    "curriculum",
    [
        CurriculumConfig(kind="paced", score="length"),
        CurriculumConfig(kind="paced", score="rarity", order="hard_first"),
        CurriculumConfig(kind="paced", score="loss", prune_fraction=0.2),
        CurriculumConfig(kind="self_paced"),
        CurriculumConfig(kind="focal"),
        CurriculumConfig(kind="importance"),
        CurriculumConfig(kind="rho", rho_holdout_steps=10),
        CurriculumConfig(kind="confidence"),
        CurriculumConfig(kind="staged", score="forgetting"),
    ],
    ids=lambda c: f"{c.kind}-{c.score}",
)
def test_every_curriculum_trains_a_transformer_on_masked_tokens(pcfg_bank, curriculum):
    records = _records(student_loop(_student(pcfg_bank, curriculum=curriculum)))
    last = records[-1]
    assert [r["step"] for r in records] == [20, 40]
    assert math.isfinite(last["train_loss"]) and math.isfinite(last["kd_loss"])
    assert 0.0 <= last["val_accuracy"] <= 1.0 and 0.0 <= last["teacher_agreement"] <= 1.0
    assert last["val_perplexity"] == pytest.approx(math.exp(last["val_loss"]))
    assert "test_accuracy" in last and "test_perplexity" in last


def test_a_transformer_student_learns_masked_tokens_from_the_teacher(pcfg_bank):
    cfg = _student(pcfg_bank, optim=OptimConfig(steps=120, batch_size=32, lr=3e-3))
    records = _records(student_loop(cfg))
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[-1]["teacher_agreement"] > 0.5


def test_checkpoint_and_temperature_schedules_apply_to_sequences(pcfg_bank):
    cfg = _student(
        pcfg_bank,
        teacher_schedule=TeacherScheduleConfig(kind="two_shot", checkpoint=40, switch_at=0.5),
        distill=DistillConfig(
            loss="progressive", temperature=1e-4, alpha=0.0,
            temperature_schedule=ScheduleConfig(kind="linear", end=1.0),
        ),
    )  # fmt: skip
    records = _records(student_loop(cfg))
    assert [r["teacher_checkpoint"] for r in records] == [40, 120]
    assert records[0]["temperature"] < records[1]["temperature"]


def test_a_transformer_student_resumed_from_its_state_continues_exactly(pcfg_bank):
    cfg = _student(
        pcfg_bank, curriculum=CurriculumConfig(kind="paced", score="rarity"),
        model=TINY.model_copy(update={"dropout": 0.1}),
    )  # fmt: skip
    whole, state = [], None
    for record, run in student_loop(cfg):
        whole.append(record)
        if record["step"] == 20:
            state = run.state_dict()
    resumed = _records(student_loop(cfg, resume_from=state))
    assert [_curve(r) for r in resumed] == [_curve(r) for r in whole[1:]]


@pytest.fixture(scope="module")
def text_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    for i in range(3):
        (root / f"f{i}.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 40)
    data = DataConfig(kind="text", path=str(root), seq_len=32, max_examples=200)
    out = root / "bank"
    cfg = TeacherConfig(
        data=data, task=TaskConfig(kind="causal_lm"),
        model=ModelConfig(kind="transformer", width=32, depth=2, heads=2, max_length=32),
        optim=OptimConfig(lr=3e-3, batch_size=32, steps=60), eval_every=30,
    )  # fmt: skip
    records = _teach(cfg, out)
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    return data, str(out)


@pytest.mark.parametrize(
    "model",
    [
        ModelConfig(kind="transformer", width=16, depth=1, heads=2, max_length=32),
        ModelConfig(kind="module", factory="usermodels:tiny_lm", kwargs={"vocab": 256}),
        ModelConfig(
            kind="hf",
            architecture="GPT2LMHeadModel",
            config={"n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 32},
        ),
    ],
    ids=lambda m: m.kind,
)
def test_causal_lm_students_of_every_kind_distil_next_bytes(text_bank, model):
    if model.kind == "hf":
        pytest.importorskip("transformers", reason="the [hf] extra is not installed")
    data, bank = text_bank
    cfg = StudentConfig(
        data=data, task=TaskConfig(kind="causal_lm"), model=model, teacher_bank=bank,
        optim=OptimConfig(steps=30, batch_size=16, lr=3e-3), eval_every=15,
        curriculum=CurriculumConfig(kind="paced", score="loss"),
    )  # fmt: skip
    records = _records(student_loop(cfg))
    assert records[-1]["val_loss"] < records[0]["val_loss"] + 1e-9 or records[-1]["val_loss"] < 5.6
    assert math.isfinite(records[-1]["val_perplexity"]) and "test_perplexity" in records[-1]


DIGITS_IMAGES = DataConfig(kind="digits", shape=[1, 8, 8])


@pytest.fixture(scope="module")
def cnn_bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn") / "bank"
    cfg = TeacherConfig(
        data=DIGITS_IMAGES, model=ModelConfig(kind="cnn", channels=[16, 32]),
        optim=OptimConfig(lr=3e-3, batch_size=64, steps=150), eval_every=50,
    )  # fmt: skip
    assert _teach(cfg, out)[-1]["val_accuracy"] > 0.85
    return str(out)


def test_a_cnn_student_distils_a_cnn_teacher(cnn_bank):
    cfg = StudentConfig(
        data=DIGITS_IMAGES, model=ModelConfig(kind="cnn", channels=[8, 16]),
        teacher_bank=cnn_bank, eval_every=100, optim=OptimConfig(steps=200, batch_size=32),
    )  # fmt: skip
    assert _records(student_loop(cfg))[-1]["val_accuracy"] > 0.7


def test_a_users_module_learns_images_under_a_curriculum(cnn_bank):
    cfg = StudentConfig(
        data=DIGITS_IMAGES, model=ModelConfig(kind="module", factory="usermodels:tiny_cnn"),
        teacher_bank=cnn_bank, eval_every=50, optim=OptimConfig(steps=100, batch_size=32),
        curriculum=CurriculumConfig(kind="paced", score="el2n"),
    )  # fmt: skip
    records = _records(student_loop(cfg))
    assert records[-1]["val_loss"] < math.log(10) and records[-1]["curriculum_fraction"] == 1.0


def test_a_student_whose_outputs_do_not_match_the_classes_is_refused(cnn_bank):
    cfg = StudentConfig(
        data=DIGITS_IMAGES, teacher_bank=cnn_bank,
        model=ModelConfig(kind="module", factory="usermodels:wrong_classes"),
    )  # fmt: skip
    with pytest.raises(ModelError, match="outputs 8 classes per example, the data has 10"):
        build_student(cfg)


def test_token_files_stay_memory_mapped_on_the_host(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50, (300, 16)).astype(np.int32)
    np.save(tmp_path / "t.npy", tokens)
    data = DataConfig(kind="tokens", path=str(tmp_path / "t.npy"), vocab_size=50)
    bank = tmp_path / "bank"
    teacher = TeacherConfig(
        data=data, task=TaskConfig(kind="causal_lm"), model=TINY, eval_every=10,
        optim=OptimConfig(steps=10, batch_size=16),
    )  # fmt: skip
    teacher_bank(teacher, bank)
    run = build_student(
        StudentConfig(
            data=data, task=TaskConfig(kind="causal_lm"), model=TINY, teacher_bank=str(bank)
        )  # fmt: skip
    )
    assert isinstance(run.train.x, IndexRows) and isinstance(run.train.x.base, np.memmap)
    inputs, targets = run.train.gather(np.array([3, 1]))
    assert inputs.shape == (2, 15) and targets.shape == (2, 15)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_on_a_gpu_a_transformer_learns_from_host_batches_and_resumes(pcfg_bank, precision):
    import torch

    cfg = _student(
        pcfg_bank, device="cuda", precision=precision,
        model=TINY.model_copy(update={"dropout": 0.1}),  # draws from the GPU's generator
        optim=OptimConfig(steps=120, batch_size=32, lr=3e-3),
        curriculum=CurriculumConfig(kind="paced", score="rarity"),
    )  # fmt: skip
    run = build_student(cfg)
    inputs, targets = run.train.gather(np.arange(4))
    assert inputs.is_cuda and targets.is_cuda and not isinstance(run.train.x, torch.Tensor)
    whole, state = [], None
    for record, run in student_loop(cfg):
        whole.append(record)
        if record["step"] == 60:
            state = run.state_dict()
    assert whole[-1]["val_loss"] < whole[0]["val_loss"]
    resumed = _records(student_loop(cfg, resume_from=state))
    for got, want in zip(resumed, whole[3:], strict=True):  # GPU kernels: equal to rounding
        assert got["step"] == want["step"]
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-3)


@pytest.mark.gpu
def test_on_a_gpu_the_teacher_trains_there_and_banks_per_token_outputs(tmp_path):
    cfg = TeacherConfig(
        data=PCFG, task=MASKED, model=TINY, device="cuda", eval_every=20,
        optim=OptimConfig(steps=40, batch_size=64),
    )  # fmt: skip
    records = _teach(cfg, tmp_path / "bank")
    assert records[-1]["val_loss"] < records[0]["val_loss"] + 0.5
    assert open_bank(tmp_path / "bank").outputs("train").dense().shape == (512, 24, 3)


def test_adamw_decays_weights_decoupled_from_the_gradient():
    import torch

    from trainables.loops._common import make_optimizer

    weight = torch.nn.Parameter(torch.full((3,), 2.0))
    optimizer = make_optimizer([weight], OptimConfig(kind="adamw", lr=0.1, weight_decay=0.5))
    weight.grad = torch.zeros(3)
    optimizer.step()  # zero gradient: only the decoupled decay, p <- p (1 - lr * wd)
    assert weight.detach().tolist() == pytest.approx([2.0 * (1 - 0.1 * 0.5)] * 3)


@pytest.mark.parametrize("task", ["classify", "causal_lm"])
def test_a_users_dataset_trains_through_the_loops(tmp_path, task):
    if task == "classify":
        data = DataConfig(kind="module", factory="userdata:pairs", kwargs={"rows": 60})
        model = ModelConfig(kind="mlp", hidden=[8])
    else:
        data = DataConfig(kind="module", factory="userdata:sequences", kwargs={"rows": 60})
        model = TINY
    bank = tmp_path / "bank"
    teacher_bank(TeacherConfig(
        data=data, task=TaskConfig(kind=task), model=model, eval_every=10,
        optim=OptimConfig(steps=20, batch_size=8),
    ), bank)  # fmt: skip
    cfg = StudentConfig(
        data=data, task=TaskConfig(kind=task), model=model, teacher_bank=str(bank),
        eval_every=10, optim=OptimConfig(steps=20, batch_size=8),
        curriculum=CurriculumConfig(kind="paced", score="loss"),
    )  # fmt: skip
    records = _records(student_loop(cfg))
    assert math.isfinite(records[-1]["train_loss"]) and "test_accuracy" in records[-1]


def test_a_learned_temperature_distils_per_token(pcfg_bank):
    cfg = _student(
        pcfg_bank,
        distill=DistillConfig(temperature=4.0, temperature_schedule=ScheduleConfig(kind="ctkd")),
    )
    records = _records(student_loop(cfg))
    assert all(1.0 < r["temperature"] < 21.0 for r in records)
    assert records[-1]["temperature"] != 4.0  # it moved
