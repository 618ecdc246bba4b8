"""The sharded top-k teacher bank (issue 14), measured side by side in one run:

- ``bank_bytes_per_token_k32_v32k``: bytes on disk per token of a top-32 int8 bank of a
  synthetic teacher over a 32,768-token vocabulary, every file of the bank counted (shards
  with ids, codes, scales and tail; records, manifest, scores). Target <= 100. The fp16 and
  dense figures beside it (``..._fp16``, ``..._dense``).
- ``sparse_bank_over_dense_student_throughput``: the student's training steps/s (the
  engine's ``train_step``) reading a sharded top-32 bank over reading dense logits (the dense
  bank, in the page cache), same student, data and steps. Target >= 0.95.
- ``topk_kd_accuracy_gap``: the val next-byte accuracy of students distilled (alpha 0: the
  teacher only) from a top-8 bank minus from the dense bank of the same teacher run, byte
  causal LM on Python sources, mean over seeds. Target >= -0.005.
- ``bank_build_scaling_2_over_1``: the bank build's speed (examples/s once the actors are up)
  with 2 Ray Data actors over 1, one CPU and one thread each. Target >= 1.7. Beside it,
  ``..._whole_job``: the same over the whole job, actor start-up included.

``python benchmarks/bench_sparse_bank.py [bytes|throughput|accuracy|scaling ...]`` (default:
all). Runs on a GPU where there is one (the throughput part), else on the CPU.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _record import record  # noqa: E402

from trainables.bank import build_bank  # noqa: E402
from trainables.config import DataConfig, StudentConfig, TeacherConfig  # noqa: E402
from trainables.distill import Layout, write_bank  # noqa: E402
from trainables.distill._bank import plan_shards, write_manifest, write_shard  # noqa: E402
from trainables.loops import build_student, student_loop, teacher_loop, train_step  # noqa: E402
from trainables.loops._common import load_data  # noqa: E402

GPU = torch.cuda.is_available()
SPLITS = ("train", "val", "test")


def _device() -> str:
    return torch.cuda.get_device_name(0) if GPU else f"CPU, {torch.get_num_threads()} threads"


def _synthetic_logits(n: int, positions: int, vocab: int, seed: int) -> torch.Tensor:
    """Peaked, language-model-like logits: a Zipf prior over a per-sequence permutation of
    the vocabulary plus noise, ``(n, positions, vocab)``."""
    g = torch.Generator().manual_seed(seed)
    prior = -1.1 * torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))
    out = torch.empty(n, positions, vocab)
    for i in range(n):
        out[i] = prior[torch.randperm(vocab, generator=g)] + torch.randn(
            positions, vocab, generator=g
        )
    return out


def bytes_per_token() -> None:
    vocab, positions, n, k = 32768, 64, 96, 32
    tokens = 3 * n * positions
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, layout in {
            "int8": Layout((positions, vocab), k, "int8"),
            "fp16": Layout((positions, vocab), k, "fp16"),
            "dense": Layout((positions, vocab)),
        }.items():
            bank, records = Path(tmp) / name, []
            started = time.perf_counter()
            for task in plan_shards(layout, dict.fromkeys(SPLITS, n), [1], 256.0):
                logits = _synthetic_logits(task.end - task.start, positions, vocab, seed=1)
                records.append(write_shard(bank, task, layout, layout.encode(logits), "bench"))
            write_manifest(bank, layout=layout, records=records, step=1, checkpoints=[1],
                           metrics={}, scores={"confidence": np.zeros(n)})  # fmt: skip
            seconds = time.perf_counter() - started
            size = sum(p.stat().st_size for p in bank.rglob("*") if p.is_file())
            figures[name] = size / tokens
            print(f"{name}: {size:,} bytes for {tokens:,} tokens = {size / tokens:.2f} bytes a "
                  f"token ({layout.example_bytes() / positions:.0f} in its columns); "
                  f"{tokens / seconds:,.0f} tokens/s synthesised and encoded")  # fmt: skip
    note = (
        f"synthetic teacher, vocabulary {vocab}, {tokens} tokens, top-{k}: ids uint16 + 33 "
        "uint8 codes (top-k and tail) + fp16 scale a token; every file of the bank counted"
    )
    record("bank_bytes_per_token_k32_v32k", figures["int8"], "bytes", note)
    record("bank_bytes_per_token_k32_v32k_fp16", figures["fp16"], "bytes",
           "the same with fp16 log-probabilities (top-k and tail)")  # fmt: skip
    record("bank_bytes_per_token_v32k_dense", figures["dense"], "bytes", "dense float32 logits")


def throughput() -> None:
    if not GPU:
        torch.set_num_threads(1)  # one trial = one CPU, as in a sweep
    vocab, seq_len, batch = 8192, 33, 32 if GPU else 16
    steps, warmup, repeats = (300 if GPU else 60), 10, 5
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        ids = rng.zipf(1.3, size=(1600, seq_len)) % vocab
        np.save(Path(tmp) / "tokens.npy", ids.astype(np.int32))
        data = {"kind": "tokens", "path": str(Path(tmp) / "tokens.npy"), "vocab_size": vocab}
        splits = load_data(DataConfig.model_validate(data))
        sizes = {s: len(getattr(splits, f"x_{s}")) for s in SPLITS}
        logits = {s: _synthetic_logits(sizes[s], seq_len - 1, vocab, seed=i).numpy()
                  for i, s in enumerate(SPLITS)}  # fmt: skip
        scores = {"confidence": np.zeros(sizes["train"])}
        dense = write_bank(Path(tmp) / "dense", logits, step=1, metrics={}, scores=scores)
        sparse = write_bank(Path(tmp) / "top32", logits, step=1, metrics={}, scores=scores,
                            top_k=32, shard_mb=8.0)  # fmt: skip
        del logits

        def cfg(bank: Path, steps: int) -> StudentConfig:
            return StudentConfig.model_validate({
                "data": data, "task": {"kind": "causal_lm"},
                "model": {"kind": "transformer", "width": 128, "depth": 2, "heads": 4,
                          "max_length": seq_len},
                "optim": {"kind": "adam", "lr": 1e-3, "batch_size": batch, "steps": steps},
                "distill": {"temperature": 2.0, "alpha": 0.5}, "eval_every": steps,
                "teacher_bank": str(bank),
            })  # fmt: skip

        def arm(bank: Path) -> float:
            run = build_student(cfg(bank, warmup + steps))
            for step in range(1, warmup + 1):
                train_step(run, step)
            if GPU:
                torch.cuda.synchronize()
            started = time.perf_counter()
            for step in range(warmup + 1, warmup + steps + 1):
                train_step(run, step)
            if GPU:
                torch.cuda.synchronize()
            return steps / (time.perf_counter() - started)

        *_, (rec, _) = student_loop(cfg(sparse, 10))  # the whole loop once, as a user runs it
        assert np.isfinite(rec["train_loss"])
        arm(dense)  # the dense bank into the page cache: "in memory"
        rates = {"dense": [], "sparse": []}
        for _ in range(repeats):  # interleaved: the machine's noise hits both alike
            rates["dense"].append(arm(dense))
            rates["sparse"].append(arm(sparse))
    best = {k: max(v) for k, v in rates.items()}
    ratio = best["sparse"] / best["dense"]
    print(f"{_device()}: top-32 bank {best['sparse']:.1f} vs dense {best['dense']:.1f} steps/s")
    key = "sparse_bank_over_dense_student_throughput" + ("_cuda" if GPU else "")
    record(key, ratio, "ratio",
           f"{_device()}, causal LM, vocabulary {vocab}, seq {seq_len}, batch {batch}, student "
           f"transformer 128x2: top-32 fp16 bank (sharded, memory-mapped) {best['sparse']:.1f} "
           f"vs dense logits {best['dense']:.1f} steps/s (best of {repeats}, interleaved)",
    )  # fmt: skip


def accuracy() -> None:
    torch.set_num_threads(2)
    seeds = range(5)
    data = {"kind": "text", "path": "{stdlib}/json/*.py", "seq_len": 64, "max_examples": 2000}
    common = {"data": data, "task": {"kind": "causal_lm"}}
    arms = {"dense": ("dense", "fp16"), "top8": (8, "fp16"), "top8_int8": (8, "int8")}
    with tempfile.TemporaryDirectory() as tmp:
        teacher = TeacherConfig.model_validate({
            **common, "model": {"kind": "transformer", "width": 128, "depth": 2, "heads": 4,
                                "max_length": 64},
            "optim": {"lr": 2e-3, "batch_size": 32, "steps": 600}, "eval_every": 600,
            "output_dir": f"{tmp}/run",
        })  # fmt: skip
        *_, last = teacher_loop(teacher)
        banks = {}
        for name, (top_k, precision) in arms.items():
            cfg = teacher.model_copy(update={"bank": teacher.bank.model_copy(
                update={"top_k": top_k, "precision": precision})})  # fmt: skip
            banks[name] = build_bank(cfg, f"{tmp}/run", f"{tmp}/{name}", use_ray=False,
                                     progress=lambda line: None)  # fmt: skip
        accuracy = {name: [] for name in banks}
        for seed in seeds:
            for name, bank in banks.items():
                student = StudentConfig.model_validate({
                    **common, "model": {"kind": "transformer", "width": 64, "depth": 1,
                                        "heads": 4, "max_length": 64},
                    "optim": {"lr": 2e-3, "batch_size": 32, "steps": 400},
                    "distill": {"temperature": 1.0, "alpha": 0.0}, "eval_every": 400,
                    "teacher_bank": str(bank), "seed": seed,
                })  # fmt: skip
                *_, (rec, _) = student_loop(student)
                accuracy[name].append(rec["val_accuracy"])
    suffix = "_cuda" if GPU else ""
    for name, key in (("top8", "topk_kd_accuracy_gap"), ("top8_int8", "topk_kd_accuracy_gap_int8")):
        diffs = [a - b for a, b in zip(accuracy[name], accuracy["dense"], strict=True)]
        gap = statistics.mean(diffs)
        print(f"{_device()}: teacher val accuracy {last['val_accuracy']:.4f}; students: dense "
              f"{accuracy['dense']}, {name} {accuracy[name]}; gap {gap:+.4f} (sd of paired "
              f"differences {statistics.stdev(diffs):.4f})")  # fmt: skip
        record(key + suffix, gap, "accuracy",
               f"{_device()}; byte causal LM (stdlib json/*.py, seq 64), teacher transformer "
               f"128x2 (val {last['val_accuracy']:.3f}), students 64x1, 400 steps, alpha 0, "
               f"T 1, seeds 0-4: val next-byte accuracy from the {name} bank "
               f"{statistics.mean(accuracy[name]):.4f} vs dense "
               f"{statistics.mean(accuracy['dense']):.4f}; paired sd "
               f"{statistics.stdev(diffs):.4f}",
        )  # fmt: skip


def scaling() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    data = {"kind": "text", "path": "{stdlib}/*.py", "seq_len": 128, "max_examples": 3000}
    with tempfile.TemporaryDirectory() as tmp:
        teacher = TeacherConfig.model_validate({
            "data": data, "task": {"kind": "causal_lm"},
            "model": {"kind": "transformer", "width": 192, "depth": 3, "heads": 4,
                      "max_length": 128},
            "optim": {"steps": 1, "batch_size": 8}, "eval_every": 1, "output_dir": f"{tmp}/run",
        })  # fmt: skip
        for _ in teacher_loop(teacher):
            pass
        rates: dict[int, list[float]] = {1: [], 2: []}
        steady: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(2):
            for workers in (1, 2):
                cfg = teacher.model_copy(update={"bank": teacher.bank.model_copy(
                    update={"workers": workers, "top_k": 32, "shard_mb": 1.0,
                            "batch_size": 64})})  # fmt: skip
                bank = Path(f"{tmp}/bank-{workers}-{len(rates[workers])}")
                lines: list[str] = []
                started = time.perf_counter()
                build_bank(cfg, f"{tmp}/run", bank, progress=lines.append)
                seconds = time.perf_counter() - started
                rows = int(lines[0].split("(")[1].split()[0].replace(",", ""))
                rates[workers].append(rows / seconds)
                # steady state: the rows of the shards finished after the first `workers` (one
                # per actor) over the time from that finish to the last one (record mtimes)
                done = sorted(
                    (p.stat().st_mtime, json.loads(p.read_bytes()))
                    for p in (bank / "shards").rglob("*.arrow.json")
                )  # fmt: skip
                later = sum(r["end"] - r["start"] for _, r in done[workers:])
                steady[workers].append(later / (done[-1][0] - done[workers - 1][0]))
                print(f"{workers} actor(s): {rows:,} examples in {seconds:.1f} s "
                      f"({rows / seconds:,.0f}/s; {steady[workers][-1]:,.0f}/s once the "
                      f"actors are up, over {len(done)} shards)")  # fmt: skip
    ray.shutdown()
    best, run = {w: max(r) for w, r in steady.items()}, {w: max(r) for w, r in rates.items()}
    what = ("Ray Data build of a top-32 bank, teacher transformer 192x3 over 3000 byte "
            "sequences of 128, one CPU and one thread each actor, 2 cores")  # fmt: skip
    record("bank_build_scaling_2_over_1", best[2] / best[1], "ratio",
           f"{what}: 2 actors {best[2]:,.0f} vs 1 actor {best[1]:,.0f} examples/s once the "
           "actors are up (from each actor's first finished shard to the last shard), best "
           "of 2",
    )  # fmt: skip
    record("bank_build_scaling_2_over_1_whole_job", run[2] / run[1], "ratio",
           f"{what}: the whole job, actor start-up and the driver included: 2 actors "
           f"{run[2]:,.0f} vs 1 actor {run[1]:,.0f} examples/s, best of 2",
    )  # fmt: skip


PARTS = {"bytes": bytes_per_token, "throughput": throughput, "accuracy": accuracy,
         "scaling": scaling}  # fmt: skip

if __name__ == "__main__":
    for part in sys.argv[1:] or PARTS:
        print(f"--- {part}")
        PARTS[part]()
