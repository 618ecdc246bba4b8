from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from trainables.config import TeacherConfig
from trainables.curriculum import ShuffleSampler
from trainables.distill import write_teacher_outputs
from trainables.loops._common import as_tensors, evaluate, load_data, should_evaluate
from trainables.models import mlp


def teacher_loop(cfg: TeacherConfig) -> Iterator[dict[str, Any]]:
    """Train the teacher with cross-entropy, yielding metrics every ``eval_every`` steps.

    After the last step, if ``cfg.output_dir`` is set, the teacher's logits on the train,
    validation and test splits are written there (see :func:`write_teacher_outputs`).
    """
    data = load_data(cfg.data)
    torch.manual_seed(cfg.seed)
    x_train, y_train, x_val, y_val, x_test, y_test = as_tensors(
        data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test
    )
    model = mlp(data.num_features, cfg.model.hidden, data.num_classes)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    sampler = ShuffleSampler(len(y_train), cfg.optim.batch_size, seed=cfg.seed)
    started, loss_sum, losses, samples = time.perf_counter(), torch.zeros(()), 0, 0
    history = []

    for step in range(1, cfg.optim.steps + 1):
        batch = torch.from_numpy(sampler.next_batch())
        loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        losses, samples = losses + 1, samples + len(batch)
        if should_evaluate(step, cfg.eval_every, cfg.optim.steps):
            val = evaluate(model, x_val, y_val)
            record = {
                "step": step,
                "samples_seen": samples,
                "wall_time_s": time.perf_counter() - started,
                "train_loss": loss_sum.item() / losses,  # host sync, once per evaluation
                "val_accuracy": val.accuracy,
                "val_loss": val.loss,
            }
            history.append(record)
            yield record
            loss_sum, losses = torch.zeros(()), 0

    if cfg.output_dir is not None:
        val, test = evaluate(model, x_val, y_val), evaluate(model, x_test, y_test)
        train = evaluate(model, x_train, y_train)
        write_teacher_outputs(
            cfg.output_dir,
            {"train": train.logits.numpy(), "val": val.logits.numpy(), "test": test.logits.numpy()},
            step=cfg.optim.steps,
            metrics={
                "train_accuracy": train.accuracy,
                "val_accuracy": val.accuracy,
                "test_accuracy": test.accuracy,
            },
            history=history,
        )
