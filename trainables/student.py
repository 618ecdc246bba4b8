"""Ray Tune entry points for the student: inline (one worker, the loop runs in the Tune trial)
and data-parallel (the same per-worker loop on several Ray Train workers under TorchTrainer).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from trainables.checkpoint import read_state, save_checkpoint
from trainables.config import StudentConfig, nest
from trainables.loops import is_last, repeated_loop


class WorkerStartTimeout(RuntimeError):
    """The trial's Ray Train workers could not be placed within the timeout."""


def train_student(config: dict[str, Any]) -> None:
    """Tune function trainable: distil a stored teacher into a student under a schedule.

    ``config`` is a :class:`~trainables.config.StudentConfig` as a nested dict (unknown keys
    are rejected). Use it in your own Ray job::

        from ray import tune
        from trainables import StudentConfig, train_student

        base = StudentConfig(teacher_bank="/path/to/teacher_bank").model_dump()
        tune.Tuner(train_student, param_space=base).fit()

    Reports, every ``eval_every`` steps, the metrics listed in
    :func:`trainables.loops.student_loop` (the mean over seeds when ``repeats > 1``) and the
    ``node_id`` of the Ray node it runs on. Saves the student with the reports
    ``checkpoint`` asks for (by default the last; layout: :mod:`trainables.checkpoint`,
    loaded back by :func:`trainables.load_student`), and continues from Tune's checkpoint
    when it has one: a trial restarted after a failure, or a PBT trial continuing from a
    better one's state under its own, perturbed settings (PBT needs ``checkpoint.every: 1``).

    Runs only as a Tune trial (``tune.Tuner(train_student, ...)``): called in a Ray Train
    worker or outside Tune it raises :class:`RuntimeError` at once (inside your own
    ``TorchTrainer`` use :func:`student_worker`).
    """
    require_tune("train_student")
    _quiet_checkpoint_lines("ray.train._internal.storage")
    _quiet_checkpoint_lines("ray.tune.trainable.trainable")  # "Restored on ... from checkpoint"
    cfg = StudentConfig.model_validate(config)
    node = ray.get_runtime_context().get_node_id()
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_from = read_state(directory)
    for report, (record, runs) in enumerate(repeated_loop(cfg, resume_from=resume_from), 1):
        record = {**record, "node_id": node}
        if not cfg.checkpoint.due(report, last=is_last(record)):
            tune.report(record)
            continue
        with tempfile.TemporaryDirectory() as directory:
            states = [run.state_dict() for run in runs]
            save_checkpoint(directory, cfg, states, runs[0].model_args, record)
            tune.report(record, checkpoint=tune.Checkpoint.from_directory(directory))


def train_student_checkpointed(config: dict[str, Any]) -> None:
    """:func:`train_student` saving with every report (``checkpoint.every: 1``), for
    Population Based Training: kept for jobs written against earlier versions."""
    train_student(nest({"checkpoint.every": 1}, into=config))


def _quiet_checkpoint_lines(logger: str) -> None:
    """Ray logs "Checkpoint successfully created at: ..." for every checkpoint, i.e. for every
    trial (its last report saves one), and Ray Train a line for every report: noise in a
    sweep's console. Its INFO lines off."""
    logging.getLogger(logger).setLevel(logging.WARNING)


def require_tune(
    name: str,
    *,
    elsewhere: str = "inside your own TorchTrainer use trainables.student_worker as the train loop",
) -> None:
    """:class:`RuntimeError` unless this runs as a Ray Tune trial (not in a Ray Train worker,
    where ``tune.report`` would only warn and the run would end with no metrics); the message
    names ``elsewhere``, what to use instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray warns when there is no Tune session
        in_tune = ray.is_initialized() and tune.get_context().get_trial_id() is not None
    if in_tune:
        return
    raise RuntimeError(
        f"{name} is a Ray Tune trainable: pass it to tune.Tuner({name}, param_space=...); "
        f"{elsewhere}"
    )


def distributed_student(
    num_workers: int,
    *,
    cpus_per_worker: float = 1.0,
    use_gpu: bool = False,
    start_timeout_s: float = 120.0,
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable that runs each trial on ``num_workers`` Ray Train workers
    (``TorchTrainer``, DDP over gloo on CPU, NCCL on GPU with one GPU per worker); every worker
    runs the same loop on its rank's shard of each global batch of ``optim.batch_size *
    num_workers`` examples.

    The trial first reserves its workers' resources (a placement group) and fails with
    :class:`WorkerStartTimeout` if they cannot be had within ``start_timeout_s``, instead of
    waiting forever (ray#54305, ray#47439). Give the trial itself few resources, e.g.
    ``tune.with_resources(distributed_student(2), {"cpu": 0})``: its workers ask for their own.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    return functools.partial(
        _run_distributed, num_workers=num_workers, cpus_per_worker=cpus_per_worker,
        use_gpu=use_gpu, start_timeout_s=start_timeout_s,
    )  # fmt: skip


def _run_distributed(
    config: dict[str, Any],
    *,
    num_workers: int,
    cpus_per_worker: float,
    use_gpu: bool,
    start_timeout_s: float,
) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    require_tune("distributed_student(...)")
    StudentConfig.model_validate(config)  # fail here, with the field named, not in a worker
    bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    _wait_for_resources([bundle] * num_workers, start_timeout_s)
    context = tune.get_context()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"student-{context.get_trial_id()}")
    trainer = TorchTrainer(
        student_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=bundle
        ),
        run_config=RunConfig(
            name=name, storage_path=context.get_trial_dir(), callbacks=[TuneReportCallback()]
        ),
    )
    trainer.fit()


def _wait_for_resources(bundles: list[dict[str, float]], timeout_s: float) -> None:
    """Reserve and release ``bundles``: a clear error when the cluster cannot provide them."""
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group(bundles, strategy="PACK")
    try:
        ready, _ = ray.wait([group.ready()], timeout=timeout_s)
        if not ready:
            raise WorkerStartTimeout(
                f"resources: {len(bundles)} workers of {bundles[0]} could not be placed within "
                f"{timeout_s:.0f} s (cluster: {ray.available_resources()} available); lower "
                "resources.workers or cpus_per_worker, or add nodes"
            )
    finally:
        remove_placement_group(group)


def student_worker(config: dict[str, Any]) -> None:
    """The student's per-worker train loop for your own Ray Train ``TorchTrainer``: DDP
    (gloo on CPU, NCCL with one GPU per worker), every rank training on its shard of each
    global batch of ``optim.batch_size * num_workers`` examples (the curriculum draws the
    same global batch on every rank from the same seed), gradients averaged across ranks::

        from ray.train import ScalingConfig
        from ray.train.torch import TorchTrainer
        from trainables import StudentConfig, student_worker

        config = StudentConfig(teacher_bank="/path/to/teacher_bank").model_dump()
        result = TorchTrainer(
            student_worker, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=2),
        ).fit()
        result.metrics["test_accuracy"], result.checkpoint  # rank 0's last report

    Every rank reports every ``eval_every`` steps (Ray Train keeps rank 0's metrics); rank
    0 attaches a checkpoint to the reports ``checkpoint`` asks for (by default the last), so
    ``Result.metrics`` and ``Result.checkpoint`` hold the final student
    (:func:`trainables.load_student`). A run restarted by Ray Train (``FailureConfig``)
    continues from its latest checkpoint. Inside a Tune trial use :func:`train_student`
    (one worker) or :func:`distributed_student` (several), which run this under Tune.
    """
    import ray.train
    import torch
    from torch.nn.parallel import DistributedDataParallel

    try:
        context = ray.train.get_context()
    except Exception:  # Ray raises RuntimeError or its own error outside a Train worker
        raise RuntimeError(
            "student_worker is a Ray Train train loop: pass it to TorchTrainer(student_worker, "
            "train_loop_config=...); in a Tune trial use trainables.train_student"
        ) from None
    _quiet_checkpoint_lines("ray.train.v2._internal.execution.storage")
    with contextlib.suppress(ImportError):  # "Reporting training result ..." of every report
        from ray.train.v2._internal.execution import context as train_context

        _quiet_checkpoint_lines(train_context.__file__)  # Ray names that logger by its file
    cfg = StudentConfig.model_validate(config)
    rank, node = context.get_world_rank(), ray.get_runtime_context().get_node_id()
    device_ids = None
    if cfg.device != "cpu" and torch.cuda.is_available():
        device = ray.train.torch.get_device()  # this worker's GPU
        torch.cuda.set_device(device)
        device_ids = [device.index]

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        # a user's module or a Hugging Face model may hold parameters this task never uses
        # (a pooler, another head): DDP must then not wait for their gradients
        own = cfg.model.kind in ("module", "hf")
        return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=own)

    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_from = read_state(directory)
    loop = repeated_loop(
        cfg, rank=rank, world_size=context.get_world_size(), wrap_model=wrap,
        resume_from=resume_from,
    )  # fmt: skip
    for report, (record, runs) in enumerate(loop, 1):
        record = {**record, "node_id": node}
        if rank != 0 or not cfg.checkpoint.due(report, last=is_last(record)):
            ray.train.report(record)  # every rank reports: it is a barrier
            continue
        with tempfile.TemporaryDirectory() as directory:
            states = [run.state_dict() for run in runs]
            save_checkpoint(directory, cfg, states, runs[0].model_args, record)
            ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(directory))
