"""A real sweep (Ray Tune, Optuna, Parquet) of a transformer student on masked tokens: PBT
continues trials from each other's checkpoints (the student's whole state, transformer
included), and the tables carry the language-model metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import load_curves, load_teacher, load_trials
from search.spec import load_spec
from search.sweep import run_sweep

PCFG = Path(__file__).resolve().parents[2] / "examples" / "pcfg_progressive.yaml"
SMALL = [
    "data.train_size=512", "data.holdout_size=64", "data.seq_len=24",
    "teacher.model.width=32", "teacher.model.depth=2", "teacher.optim.steps=100",
    "teacher.eval_every=25", "teacher.checkpoint_every=25",
    "student.optim.steps=160", "student.eval_every=20", "student.optim.batch_size=32",
]  # fmt: skip


@pytest.mark.ray
def test_pbt_evolves_a_transformer_student_on_masked_tokens(ray_session, tmp_path):
    spec = load_spec(
        PCFG,
        [*SMALL, f"storage={tmp_path}", "name=pbt-lm", "num_samples=4", "scheduler.kind=pbt",
         "scheduler.perturbation_interval=0.25", "search.algorithm=random",
         "baselines=[labels_only]", "space.teacher_schedules=[final, lockstep]",
         "space.temperature=[0.5, 4.0]", "space.losses=[hinton]",
         "student.distill={loss: hinton, temperature: 1.0, alpha: 0.5}", "space.alpha=[0.0, 1.0]"],
    )  # fmt: skip
    results = run_sweep(spec)
    trials = load_trials(results).to_pandas()
    assert len(trials) == 5 and (trials["status"] == "TERMINATED").all(), trials["error"].tolist()
    assert (trials["steps"] == 160).all() and set(trials["config.model.kind"]) == {"transformer"}
    assert trials["val_perplexity"].notna().all() and trials["test_perplexity"].notna().all()
    curves = load_curves(results).to_pandas()
    assert curves["val_perplexity"].notna().all() and (curves["val_perplexity"] >= 1).all()
    assert load_teacher(results).to_pandas()["val_perplexity"].notna().all()
    exploits = (results / "tune" / "students" / "pbt_global.txt").read_text().splitlines()
    assert exploits, "no trial continued from another's checkpoint"
    moved = [json.loads(line)[-1]["distill"]["temperature"] for line in exploits]
    assert all(0.5 <= t <= 4.0 for t in moved)


@pytest.mark.ray
def test_an_hf_teacher_and_a_users_module_student_in_a_real_sweep(ray_session, tmp_path):
    pytest.importorskip("transformers", reason="the [hf] extra is not installed")
    text = tmp_path / "text"
    text.mkdir()
    for i in range(4):
        (text / f"{i}.txt").write_text(f"line {i}: the quick brown fox jumps over the dog\n" * 30)
    gpt2 = "{n_embd: 32, n_layer: 1, n_head: 2, n_positions: 32}"
    spec = load_spec(
        Path(__file__).resolve().parents[2] / "examples" / "text_lm.yaml",
        [f"storage={tmp_path}", "name=own-models", f"data.path={text}", "data.seq_len=32",
         "data.max_examples=200", "teacher.model.kind=hf",
         "teacher.model.architecture=GPT2LMHeadModel", f"teacher.model.config={gpt2}",
         "teacher.optim.steps=40", "teacher.eval_every=20", "student.model.kind=module",
         "student.model.factory=usermodels:tiny_lm", "student.model.kwargs={vocab: 256}",
         "student.optim.steps=40", "student.eval_every=20", "num_samples=2", "baselines=[]"],
    )  # fmt: skip
    results = run_sweep(spec)
    trials = load_trials(results).to_pandas()
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all(), trials["error"].tolist()
    assert set(trials["config.model.factory"]) == {"usermodels:tiny_lm"}
    assert trials["config.model.kwargs"].tolist() == ['{"vocab": 256}'] * 2  # JSON text
    assert trials["config.curriculum.score"].dropna().isin(["length", "rarity", "loss"]).all()


@pytest.mark.ray
@pytest.mark.slow
def test_a_two_worker_transformer_trial_runs_per_token_kd_under_torchtrainer(ray_session, tmp_path):
    spec = load_spec(
        PCFG,
        [*SMALL, f"storage={tmp_path}", "name=ddp-lm", "num_samples=1", "resources.workers=2",
         "baselines=[]", "student.optim.steps=40", "space.teacher_schedules=[lockstep]"],
    )  # fmt: skip
    results = run_sweep(spec)
    trials = load_trials(results).to_pandas()
    assert trials["status"].tolist() == ["TERMINATED"], trials["error"].tolist()
    curves = load_curves(results).to_pandas()
    assert curves["samples_seen"].tolist() == [20 * 32 * 2, 40 * 32 * 2]  # global batches
    assert curves["val_perplexity"].notna().all()
