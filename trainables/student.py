"""Ray Tune entry points for the student: inline (one worker, the loop runs in the Tune trial)
and data-parallel (the same per-worker loop on several Ray Train workers under TorchTrainer).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from trainables.config import StudentConfig
from trainables.loops import repeated_loop


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
    ``node_id`` of the Ray node it runs on.
    """
    cfg = StudentConfig.model_validate(config)
    node = ray.get_runtime_context().get_node_id()
    for record, _ in repeated_loop(cfg):
        tune.report({**record, "node_id": node})


def train_student_checkpointed(config: dict[str, Any]) -> None:
    """:func:`train_student` that saves its whole state (every seed's model, optimiser,
    sampler, generators) with every report and resumes from Tune's checkpoint when it has one:
    for Population Based Training (a trial continues from a better one's state under its own,
    perturbed settings) and for trials restarted after a failure.

    ``state.pt`` holds only tensors and plain Python values and is read with
    ``weights_only=True``: a checkpoint on shared storage that names any other callable is
    refused (``UnpicklingError``), never run."""
    import tempfile

    import torch

    cfg = StudentConfig.model_validate(config)
    node = ray.get_runtime_context().get_node_id()
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_from = torch.load(f"{directory}/state.pt", weights_only=True, map_location="cpu")
    for record, runs in repeated_loop(cfg, resume_from=resume_from):
        with tempfile.TemporaryDirectory() as directory:  # state.pt: a list, one state per seed
            torch.save([run.state_dict() for run in runs], f"{directory}/state.pt")
            tune.report(
                {**record, "node_id": node},
                checkpoint=tune.Checkpoint.from_directory(directory),
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

    StudentConfig.model_validate(config)  # fail here, with the field named, not in a worker
    bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    _wait_for_resources([bundle] * num_workers, start_timeout_s)
    context = tune.get_context()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"student-{context.get_trial_id()}")
    trainer = TorchTrainer(
        _student_worker,
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


def _student_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the student loop on this rank's shard, reporting from every rank
    (Ray Train forwards rank 0's metrics to Tune)."""
    import ray.train
    import torch
    from torch.nn.parallel import DistributedDataParallel

    context = ray.train.get_context()
    cfg = StudentConfig.model_validate(config)
    node = ray.get_runtime_context().get_node_id()
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

    for record, _ in repeated_loop(
        cfg, rank=context.get_world_rank(), world_size=context.get_world_size(), wrap_model=wrap
    ):
        ray.train.report({**record, "node_id": node})
