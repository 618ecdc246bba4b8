"""The sharded, top-k teacher bank without Ray: layout, gathering across shards, the student's
sparse KD through a real bank, resuming a build, and cross-fitted difficulty scores."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from trainables.bank import build_bank, teacher_bank
from trainables.config import (
    BankConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    StudentConfig,
    TeacherConfig,
)
from trainables.distill import BankCorruptError, Layout, open_bank, write_bank
from trainables.distill._bank import plan_shards
from trainables.distill._run import fold_of
from trainables.distill._topk import encode_topk
from trainables.loops import build_student
from trainables.loops._student import kd_parts

SPLITS = ("train", "val", "test")


def _logits(shape, seed=0):
    rng = np.random.default_rng(seed)
    return {s: (rng.normal(size=(n, *shape)) * 3).astype(np.float32)
            for s, n in zip(SPLITS, (300, 40, 30), strict=True)}  # fmt: skip


def test_layout_bytes_per_token_at_k32_and_a_32k_vocabulary():
    shape = (16, 32768)
    assert Layout(shape, 32, "int8").example_bytes() == 16 * 99  # ids 64 + codes 33 + scale 2
    assert Layout(shape, 32, "fp16").example_bytes() == 16 * 130
    assert Layout(shape, None).example_bytes() == 16 * 32768 * 4


def test_bank_config_resolves_dense_for_small_label_sets_and_32_for_vocabularies():
    assert BankConfig().resolved_top_k(10) is None
    assert BankConfig().resolved_top_k(1024) is None
    assert BankConfig().resolved_top_k(1025) == 32
    assert BankConfig(top_k=8).resolved_top_k(10) == 8
    assert BankConfig(top_k=64).resolved_top_k(10) is None  # k covers the classes: dense
    assert BankConfig(top_k="dense").resolved_top_k(50_000) is None
    with pytest.raises(ValueError, match="top_k"):
        BankConfig(top_k=0)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("shape", [(50,), (6, 50)])
def test_a_topk_bank_gathers_any_rows_across_its_shards(tmp_path, precision, shape):
    logits = _logits(shape)
    write_bank(tmp_path / "b", logits, step=7, metrics={}, top_k=8, precision=precision,
               shard_mb=0.002)  # fmt: skip
    bank = open_bank(tmp_path / "b")
    train = bank.outputs("train")
    assert len(bank.shards["7"]["train"]) >= 3 and len(train) == 300
    rows = np.random.default_rng(1).permutation(300)[:97]
    got = train.gather(rows)
    want = encode_topk(logits["train"][rows], 8, precision)
    for name, array in got.items():
        np.testing.assert_array_equal(array, want[name].reshape(len(rows), -1))


def test_a_dense_bank_round_trips_exactly_across_shards(tmp_path):
    logits = _logits((10,))
    write_bank(tmp_path / "b", logits, step=3, metrics={}, shard_mb=0.001)
    bank = open_bank(tmp_path / "b")
    for split in SPLITS:
        np.testing.assert_array_equal(bank.outputs(split).dense(), logits[split])
    rows = np.array([299, 0, 150, 26, 27, 26])
    np.testing.assert_array_equal(bank.outputs("train").gather(rows)["logits"],
                                  logits["train"][rows])  # fmt: skip


def test_shards_are_planned_by_size_and_cover_every_row_once():
    layout = Layout((10,))  # 40 bytes an example
    tasks = plan_shards(layout, {"train": 1000, "val": 5, "test": 0}, [1, 9], 0.01)
    for step in (1, 9):
        train = [t for t in tasks if t.step == step and t.split == "train"]
        assert [t.start for t in train] == list(range(0, 1000, 262))  # 10 KiB / 40 bytes
        assert train[-1].end == 1000
        empty = [t for t in tasks if t.step == step and t.split == "test"]
        assert [(t.start, t.end) for t in empty] == [(0, 0)]


# --- the student's KD through a real bank --------------------------------------------------


def _student_loss(bank_dir, top_k=None, alpha=0.3, temperature=2.0):
    cfg = StudentConfig(
        teacher_bank=str(bank_dir), optim=OptimConfig(steps=10),
        distill=DistillConfig(alpha=alpha, temperature=temperature, top_k=top_k),
    )  # fmt: skip
    run = build_student(cfg)
    run.alpha, run.temperature = alpha, temperature
    rows = np.arange(64)
    run.targets.use(run.checkpoint_at(1))
    x, y = run.train.gather(rows)
    torch.manual_seed(0)
    with torch.no_grad():
        per, _ = kd_parts(run, run.model, x, y, rows)
    return per


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    """Dense, top-10 (all of digits' classes), top-8 and top-4 banks of one digits teacher."""
    root = tmp_path_factory.mktemp("banks")
    dense = teacher_bank(TeacherConfig(optim=OptimConfig(steps=60), eval_every=60), root / "d",
                         progress=lambda line: None)  # fmt: skip
    opened = open_bank(dense)
    logits = {s: opened.outputs(s).dense() for s in SPLITS}
    out = {"dense": dense}
    for k in (10, 8, 4):
        out[k] = write_bank(root / f"k{k}", logits, step=opened.step, metrics=opened.metrics,
                            scores=opened.scores, top_k=k, shard_mb=0.01)  # fmt: skip
    return out


def test_student_kd_from_a_full_k_bank_equals_the_dense_bank(banks):
    dense, full = _student_loss(banks["dense"]), _student_loss(banks[10])
    assert full.kd.abs().min() > 0
    torch.testing.assert_close(full.kd, dense.kd, rtol=2e-3, atol=2e-3)  # fp16 log-probs
    torch.testing.assert_close(full.ce, dense.ce)


def test_distill_top_k_truncates_a_bank_like_a_smaller_bank(banks):
    smaller = _student_loss(banks[4])
    truncated = _student_loss(banks[8], top_k=4)
    from_dense = _student_loss(banks["dense"], top_k=4)
    torch.testing.assert_close(truncated.kd, smaller.kd, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(from_dense.kd, smaller.kd, rtol=2e-3, atol=2e-3)
    assert not torch.allclose(smaller.kd, _student_loss(banks[8]).kd, rtol=1e-2)


def test_distill_top_k_above_the_banks_k_is_refused(banks):
    with pytest.raises(ValueError, match=r"distill.top_k: 9 is more than the teacher bank keeps"):
        _student_loss(banks[8], top_k=9)


# --- building and resuming ----------------------------------------------------------------


@pytest.fixture
def teacher_run(tmp_path):
    from trainables.loops import teacher_loop

    cfg = TeacherConfig(
        optim=OptimConfig(steps=40), eval_every=20, checkpoint_every=20,
        output_dir=str(tmp_path / "run"), bank=BankConfig(top_k=4, shard_mb=0.004),
    )  # fmt: skip
    for _ in teacher_loop(cfg):
        pass
    return cfg


def _shard_files(bank):
    return sorted(p for p in (bank / "shards").rglob("*.arrow") if not p.name.startswith("."))


def test_a_resumed_build_keeps_finished_shards_and_rebuilds_the_rest(tmp_path, teacher_run):
    cfg, run_dir = teacher_run, tmp_path / "run"
    fresh = build_bank(cfg, run_dir, tmp_path / "fresh", use_ray=False, progress=print)
    bank = build_bank(cfg, run_dir, tmp_path / "bank", use_ray=False, progress=print)
    files = _shard_files(bank)
    assert len(files) > 12  # 2 checkpoints x 3 splits, several shards each
    # a killed build: no manifest, one shard without its record, one torn (truncated), and a
    # hidden half-written file of the writer's
    (bank / "manifest.json").unlink()
    no_record, torn, kept = files[0], files[5], files[1:5] + files[6:]
    no_record.with_name(no_record.name + ".json").unlink()
    torn.write_bytes(torn.read_bytes()[:100])
    (torn.parent / f".{torn.name}.abcd1234").write_bytes(b"half a shard")
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}
    lines = []
    build_bank(cfg, run_dir, bank, use_ray=False, progress=lines.append)
    assert f"2 of {len(files)} shards to build" in lines[0] and f"{len(files) - 2} kept" in lines[0]
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == before
    a, b = open_bank(bank), open_bank(fresh)
    a.verify()
    for step in a.checkpoints:
        for split in SPLITS:
            rows = np.arange(len(a.outputs(split, step)))
            got, want = a.outputs(split, step).gather(rows), b.outputs(split, step).gather(rows)
            for name in got:
                np.testing.assert_array_equal(got[name], want[name])


def test_a_shard_damaged_after_the_build_is_never_read(tmp_path, teacher_run):
    bank = build_bank(teacher_run, tmp_path / "run", tmp_path / "bank", use_ray=False,
                      progress=lambda line: None)  # fmt: skip
    opened = open_bank(bank)
    shard = bank / opened.shards[str(opened.step)]["train"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-200] ^= 0xFF  # same size, one byte changed
    shard.write_bytes(bytes(data))
    train = opened.outputs("train")
    train.gather(np.array([0]))  # the first shard is fine
    with pytest.raises(BankCorruptError, match=r"train-00001\.arrow is corrupt"):
        train.gather(np.arange(len(train)))


def test_shards_of_another_teacher_run_are_not_reused(tmp_path, teacher_run):
    from trainables.loops import teacher_loop

    build_bank(teacher_run, tmp_path / "run", tmp_path / "bank", use_ray=False,
               progress=lambda line: None)  # fmt: skip
    (tmp_path / "bank" / "manifest.json").unlink()
    for _ in teacher_loop(teacher_run):  # the teacher trained again: a new run
        pass
    lines = []
    build_bank(teacher_run, tmp_path / "run", tmp_path / "bank", use_ray=False,
               progress=lines.append)  # fmt: skip
    assert "kept" not in lines[0]


# --- cross-fitted difficulty ----------------------------------------------------------------


def test_folds_are_balanced_and_seeded():
    folds = fold_of(103, 4, seed=5)
    assert sorted(np.bincount(folds)) == [25, 26, 26, 26]
    np.testing.assert_array_equal(folds, fold_of(103, 4, seed=5))
    assert not np.array_equal(folds, fold_of(103, 4, seed=6))


def _auroc(score, positive):
    """The probability that a positive scores above a negative (ties count half)."""
    pos, neg = score[positive], score[~positive]
    above = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return float(above)


@pytest.mark.slow
def test_cross_fitted_scores_rank_flipped_labels_hard_where_the_full_teacher_memorised(tmp_path):
    """10% of digits' labels flipped; a teacher that fits its training set (train accuracy 1)
    still scores most flipped examples easier than the out-of-fold teachers do."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    flipped = rng.random(len(y)) < 0.1
    noisy = np.where(flipped, (y + rng.integers(1, 10, len(y))) % 10, y)
    columns = {f"f{i}": x[:, i] / 16.0 for i in range(64)}
    columns |= {"label": noisy, "flipped": flipped.astype(float)}
    pq.write_table(pa.table(columns), tmp_path / "noisy.parquet")
    cfg = TeacherConfig(
        data=DataConfig(kind="file", path=str(tmp_path / "noisy.parquet"),
                        difficulty_column="flipped"),
        model=ModelConfig(hidden=[256]), optim=OptimConfig(lr=3e-3, batch_size=64, steps=1000),
        eval_every=1000, score_folds=3,
    )  # fmt: skip
    bank = open_bank(teacher_bank(cfg, tmp_path / "bank", progress=lambda line: None))
    assert bank.metrics["train_accuracy"] > 0.99  # it memorised the flipped labels too
    truth = bank.scores["column"] > 0.5
    assert 50 < truth.sum() < 150
    oof, full = (
        _auroc(bank.scores["oof_confidence"], truth),
        _auroc(bank.scores["confidence"], truth),
    )
    print(f"AUROC of flipped vs score: oof_confidence {oof:.3f}, confidence {full:.3f}")
    assert oof >= 0.9
    assert 1 - full >= 3 * (1 - oof) and oof - full >= 0.03  # markedly worse
    assert bank.extra["score_folds"] == 3
    costs = bank.extra["folds"]  # what cross-fitting cost: each fold's run
    assert [c["fold"] for c in costs] == [0, 1, 2]
    assert all(c["steps"] == 1000 and c["wall_time_s"] > 0 for c in costs)
    assert sorted(os.listdir(tmp_path / "bank" / "folds")) == ["fold-0", "fold-1", "fold-2"]


@pytest.mark.gpu
def test_a_gpu_build_matches_the_cpu_build_and_students_distil_from_it_on_the_gpu(tmp_path):
    """A top-k bank of a 300-token vocabulary (uint16 ids) built on the GPU (top-k taken
    on the device) equals the CPU's build up to float rounding, and a student on the GPU
    distils from it, with the prefetching gather and a truncated k."""
    from trainables.distill._topk import decode_topk
    from trainables.loops import student_loop, teacher_loop

    ids = np.random.default_rng(0).zipf(1.5, size=(300, 32)) % 300  # 300 tokens: uint16 ids
    np.save(tmp_path / "tokens.npy", ids.astype(np.int32))
    common = {
        "data": {"kind": "tokens", "path": str(tmp_path / "tokens.npy"), "vocab_size": 300},
        "task": {"kind": "causal_lm"},
        "model": {"kind": "transformer", "width": 32, "depth": 1, "heads": 2, "max_length": 32},
    }  # fmt: skip
    cfg = TeacherConfig.model_validate({
        **common, "optim": {"steps": 30, "batch_size": 16}, "eval_every": 30, "device": "cpu",
        "output_dir": str(tmp_path / "run"), "bank": {"top_k": 8, "shard_mb": 0.05},
    })  # fmt: skip
    for _ in teacher_loop(cfg):
        pass
    quiet = {"use_ray": False, "progress": lambda line: None}
    on_cpu = open_bank(build_bank(cfg, tmp_path / "run", tmp_path / "cpu", **quiet))
    gpu_cfg = cfg.model_copy(update={"device": "cuda"})
    on_gpu = open_bank(build_bank(gpu_cfg, tmp_path / "run", tmp_path / "gpu", **quiet))
    rows = np.arange(len(on_cpu.outputs("train")))
    a, b = on_cpu.outputs("train").gather(rows), on_gpu.outputs("train").gather(rows)
    assert a["ids"].dtype == np.uint16
    assert (a["ids"][:, ::8] == b["ids"][:, ::8]).mean() > 0.99  # the top-1 of every token
    _, log_a = decode_topk(a["ids"], values=a["values"])
    _, log_b = decode_topk(b["ids"], values=b["values"])
    torch.testing.assert_close(log_a[..., 0], log_b[..., 0], atol=2e-2, rtol=0)
    for top_k in (None, 4):
        student = StudentConfig.model_validate({
            **common, "optim": {"steps": 20, "batch_size": 16}, "eval_every": 10,
            "device": "cuda", "teacher_bank": str(tmp_path / "gpu"),
            "distill": {"alpha": 0.5, "temperature": 2.0, "top_k": top_k},
        })  # fmt: skip
        *_, (record, _) = student_loop(student)
        assert np.isfinite(record["train_loss"]) and record["kd_loss"] > 0


def test_gathering_reads_the_memory_map_without_copying_a_shard(tmp_path):
    rng = np.random.default_rng(0)
    logits = {s: rng.normal(size=(n, 2000)).astype(np.float32)
              for s, n in zip(SPLITS, (2000, 10, 10), strict=True)}  # fmt: skip
    write_bank(tmp_path / "b", logits, step=1, metrics={}, shard_mb=4.0)  # 4 train shards
    train = open_bank(tmp_path / "b").outputs("train")
    before = pa.total_allocated_bytes()
    got = train.gather(np.array([5, 1999, 1000]))
    views = [view["logits"] for _, view in train.blocks()]
    assert len(views) == 4 and not any(v.flags.owndata or v.flags.writeable for v in views)
    assert pa.total_allocated_bytes() - before < 1 << 20  # 16 MB of shards: not copied
    np.testing.assert_array_equal(got["logits"], logits["train"][[5, 1999, 1000]])


def test_cross_fitting_refuses_a_teacher_that_is_not_trained_from_scratch(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"score_folds: 3 needs teachers trained from scratch"):
        TeacherConfig(score_folds=3, init_from=str(weights))
    with pytest.raises(ValueError, match=r"score_folds: 2 needs"):
        TeacherConfig(score_folds=2, init_from=str(weights), train=False)
    with pytest.raises(ValueError, match="score_folds must be 0 .* got 1"):
        TeacherConfig(score_folds=1)


def test_distill_top_k_above_the_classes_is_refused(banks):
    with pytest.raises(ValueError, match=r"distill.top_k: 11 is more than the teacher's 10"):
        _student_loss(banks["dense"], top_k=11)


def test_a_teacher_with_nan_outputs_is_refused_naming_the_rows(tmp_path, teacher_run):
    from trainables.distill import RunWriter, open_run

    run = open_run(tmp_path / "run")
    poisoned = {k: v.clone() for k, v in run.weights(run.step).items()}
    name = next(k for k, v in poisoned.items() if v.dtype.is_floating_point)
    poisoned[name].fill_(float("nan"))
    with RunWriter(tmp_path / "bad") as writer:
        writer.add_checkpoint(1, poisoned)
        writer.commit(shape=list(run.shape), sizes=run.sizes, metrics=run.metrics)
    with pytest.raises(ValueError, match=r"teacher checkpoint 1, train rows 0-\d+: .*NaN"):
        build_bank(teacher_run, tmp_path / "bad", tmp_path / "bank", use_ray=False,
                   progress=lambda line: None)  # fmt: skip
