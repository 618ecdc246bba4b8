"""Language-model distillation throughput: what distilling from stored teacher outputs costs a
student, in counted target tokens per second of training, measured side by side in one run.

Byte-level causal LM on the standard library's JSON package sources (``data.kind: text``,
``{stdlib}/json/*.py``, windows of ``SEQ_LEN`` bytes). A small transformer teacher is trained
briefly and banked (per-token logits of every training window); then three arms train the
same student transformer on the same batches (the engine's sampler, seed 0) for ``STEPS``
steps, interleaved, ``REPEATS`` times each, best taken:

- ``kd``: the engine's ``student_loop`` distilling from the bank (``loss: progressive``,
  alpha 0: per-token soft targets gathered from the memory-mapped bank each step).
- ``kd_top32``: the same from a top-32 bank of the same teacher (top-k ids, log-probabilities
  and the tail: 130 bytes a token instead of 256 floats).
- ``labels``: the engine's ``student_loop`` with alpha 1 (labels only, the teacher not read).
- ``plain``: a hand-written PyTorch loop: the model from ``trainables.models.build_model``,
  ``torch.optim.Adam`` at the same learning rate, ``F.cross_entropy`` over the same targets.

Tokens counted: target tokens (every next-byte position, ``SEQ_LEN - 1`` per window) per
second of training steps, from the first timed step, after ``WARMUP`` untimed ones; no
evaluation inside the clock (the engine arms run ``student_loop``'s own step,
``build_student`` + ``train_step``, without its final evaluation). Records
``lm_kd_over_ce_throughput`` (kd over plain, the issue's figure, target >= 0.9) and
``lm_labels_over_ce_throughput`` (labels over plain: the engine's own overhead, separate
from the cost of the KD loss).

Runs on a CUDA GPU when one is visible (``device: auto``), with a longer sequence, a larger
batch and more steps; prints the device, and records the GPU's figures under the same keys
with ``_cuda`` appended, so the CPU figures stay.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _record import record  # noqa: E402

from trainables.bank import build_bank  # noqa: E402
from trainables.config import StudentConfig, TeacherConfig  # noqa: E402
from trainables.curriculum import ShuffleSampler  # noqa: E402
from trainables.loops import build_student, student_loop, teacher_loop, train_step  # noqa: E402
from trainables.loops._batches import split_data  # noqa: E402
from trainables.loops._build import make_model  # noqa: E402
from trainables.loops._common import load_data  # noqa: E402
from trainables.tasks import IGNORE, make_task  # noqa: E402

GPU = torch.cuda.is_available()
SEQ_LEN = 128 if GPU else 64
BATCH = 64 if GPU else 32
STEPS = 400 if GPU else 80  # timed steps per arm and repeat
WARMUP = 20
REPEATS = 5
LR = 1e-3
DATA = {"kind": "text", "path": "{stdlib}/json/*.py", "seq_len": SEQ_LEN, "max_examples": 2000}
TASK = {"kind": "causal_lm"}
STUDENT = {"kind": "transformer", "width": 128, "depth": 2, "heads": 4, "max_length": SEQ_LEN}
TEACHER = {"kind": "transformer", "width": 256, "depth": 2, "heads": 4, "max_length": SEQ_LEN}


def _student_cfg(bank: str, alpha: float, steps: int) -> StudentConfig:
    return StudentConfig.model_validate({
        "data": DATA, "task": TASK, "model": STUDENT,
        "optim": {"kind": "adam", "lr": LR, "batch_size": BATCH, "steps": steps},
        "distill": {"loss": "progressive", "temperature": 1.0, "alpha": alpha},
        "eval_every": steps, "teacher_bank": bank, "seed": 0,
    })  # fmt: skip


def _sync() -> None:
    if GPU:
        torch.cuda.synchronize()  # a host sync: the clock must not stop before the GPU does


def _engine_arm(bank: str, alpha: float) -> float:
    """Counted tokens/s of the engine's training steps (``build_student`` + ``train_step``,
    exactly what ``student_loop`` runs between evaluations): ``WARMUP`` steps, then ``STEPS``
    timed ones."""
    run = build_student(_student_cfg(bank, alpha, WARMUP + STEPS))
    for step in range(1, WARMUP + 1):
        train_step(run, step)
    _sync()
    started = time.perf_counter()
    for step in range(WARMUP + 1, WARMUP + STEPS + 1):
        train_step(run, step)
    _sync()
    return STEPS * BATCH * (SEQ_LEN - 1) / (time.perf_counter() - started)


def _plain_arm(bank: str) -> float:
    """The same student, batches and targets in a plain PyTorch loop: Adam, cross-entropy."""
    cfg = _student_cfg(bank, 1.0, WARMUP + STEPS)
    data = load_data(cfg.data)
    task = make_task(cfg.task, vocab_size=data.vocab_size, pad_id=data.pad_id)
    device = torch.device("cuda" if GPU else "cpu")
    torch.manual_seed(cfg.seed)
    train = split_data(data, task, device)["train"]
    model = make_model(cfg, data, task).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    sampler = ShuffleSampler(np.arange(len(train)), BATCH, seed=cfg.seed)
    tokens = torch.zeros((), dtype=torch.long, device=device)
    for i in range(WARMUP + STEPS):
        if i == WARMUP:
            _sync()
            started, tokens = time.perf_counter(), tokens.zero_()
        inputs, targets = train.gather(sampler.next_batch().indices)
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += (targets != IGNORE).sum()
    _sync()
    elapsed = time.perf_counter() - started
    assert tokens.item() == STEPS * BATCH * (SEQ_LEN - 1), "every byte after the first counts"
    return STEPS * BATCH * (SEQ_LEN - 1) / elapsed


def _device_name() -> str:
    if GPU:
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    started = time.perf_counter()
    if not GPU:
        torch.set_num_threads(1)  # one trial = one CPU, as in a sweep
    print(f"device: {_device_name()}; seq_len {SEQ_LEN}, batch {BATCH}, {STEPS} timed steps")
    with tempfile.TemporaryDirectory() as tmp:
        bank = str(Path(tmp) / "bank")
        teacher = TeacherConfig.model_validate({
            "data": DATA, "task": TASK, "model": TEACHER,
            "optim": {"kind": "adam", "lr": LR, "batch_size": BATCH, "steps": 60},
            "eval_every": 60, "output_dir": f"{bank}/teacher",
        })  # fmt: skip
        *_, last = teacher_loop(teacher)
        build_bank(teacher, f"{bank}/teacher", bank, use_ray=False, progress=lambda line: None)
        topk = str(Path(tmp) / "top32")  # the same teacher's top-32 bank (issue 14)
        sparse = teacher.model_copy(update={"bank": teacher.bank.model_copy(update={"top_k": 32})})
        build_bank(sparse, f"{bank}/teacher", topk, use_ray=False, progress=lambda line: None)
        print(f"teacher: 60 steps, val accuracy {last['val_accuracy']:.3f}")
        # the whole engine loop once, as a user runs it (a check that the arm below is it)
        *_, (rec, _) = student_loop(_student_cfg(bank, 0.0, 10))
        assert rec["step"] == 10 and np.isfinite(rec["train_loss"])
        arms = {"kd": [], "kd_top32": [], "labels": [], "plain": []}
        for _ in range(REPEATS):  # interleaved: the machine's noise hits all alike
            arms["kd"].append(_engine_arm(bank, 0.0))
            arms["kd_top32"].append(_engine_arm(topk, 0.0))
            arms["labels"].append(_engine_arm(bank, 1.0))
            arms["plain"].append(_plain_arm(bank))
            print({k: round(v[-1]) for k, v in arms.items()}, "tokens/s", flush=True)
    best = {k: max(v) for k, v in arms.items()}
    wall = time.perf_counter() - started
    rounded = {k: round(v) for k, v in best.items()}
    print(f"best of {REPEATS}: {rounded} tokens/s; {wall:.0f} s")
    where = f"{_device_name()}, student {STUDENT['width']}x{STUDENT['depth']}, batch {BATCH}"
    kd_ratio = best["kd"] / best["plain"]
    labels_ratio = best["labels"] / best["plain"]
    print(f"kd / plain CE {kd_ratio:.3f}; engine labels-only / plain CE {labels_ratio:.3f}")
    suffix = "_cuda" if GPU else ""
    record(
        f"lm_kd_over_ce_throughput{suffix}", kd_ratio, "ratio",
        f"{where}, byte causal LM seq {SEQ_LEN}: engine KD from the bank "
        f"{best['kd']:.0f} vs plain CE loop {best['plain']:.0f} tokens/s (best of {REPEATS})",
    )  # fmt: skip
    record(
        f"lm_kd_top32_over_ce_throughput{suffix}", best["kd_top32"] / best["plain"], "ratio",
        f"{where}, byte causal LM seq {SEQ_LEN}: engine KD from a top-32 fp16 bank of the same "
        f"teacher {best['kd_top32']:.0f} vs plain CE loop {best['plain']:.0f} tokens/s (best "
        f"of {REPEATS})",
    )  # fmt: skip
    record(
        f"lm_labels_over_ce_throughput{suffix}", labels_ratio, "ratio",
        f"{where}: engine labels only (alpha 1) {best['labels']:.0f} vs plain CE loop "
        f"{best['plain']:.0f} tokens/s: the engine's own overhead",
    )  # fmt: skip


if __name__ == "__main__":
    main()
