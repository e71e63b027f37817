"""What each launched worker process runs: set up its rank, build the components, train, log."""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch
import torch.distributed as dist

from repro import optim, schedules, sync
from repro.progress import NullProgress, RichProgress
from repro.runlog import MetricsCSV, write_json
from repro.stats import MagnitudeStats
from repro.task import TASKS
from repro.trainer import BASE_COLUMNS, TrainConfig, train


def setup_process() -> tuple[int, int, torch.device]:
    """Rank, world size and device from the launcher's environment; CUDA device per local rank + NCCL,
    otherwise gloo with the node's cores shared among its workers."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        backend = "gloo"
    if world > 1:
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return rank, world, device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def run_worker(spec: dict) -> dict:
    rank, world, device = setup_process()
    try:
        task_cls = TASKS.get(spec["task"]["name"])
        seed = spec["train"]["seed"]
        seed_everything(seed)  # same seed everywhere: rank 0's initial weights are broadcast anyway
        task = task_cls(task_cls.parse_options(spec["task"]["options"]), rank=rank, world_size=world, device=device)
        task.eval_batch_limit = spec["train"].get("eval_batches")
        sync.broadcast_model(task.model)
        seed_everything(seed + 1000 * rank)  # then each worker draws its own dropout masks and batches
        optimizer = optim.make(spec["optimizer"]["name"], task.model.parameters(), **spec["optimizer"]["hparams"])
        policy = sync.make(spec["sync"]["name"], **spec["sync"]["options"])
        epochs = spec["train"]["epochs"]
        schedule = schedules.make(spec["schedule"]["name"], epochs, **spec["schedule"]["options"])

        sink, progress = None, NullProgress()
        if rank == 0 and spec.get("run_dir"):
            run_dir = Path(spec["run_dir"])
            sink = MetricsCSV(run_dir / "metrics.csv", [*BASE_COLUMNS, *task.metric_columns, "status"])
        if rank == 0 and not spec.get("quiet"):
            progress = RichProgress(epochs, task.sample_unit, task.metric_columns)
        stats = None  # rank 0's own gradients and updates, when asked for (--log-stats)
        if sink is not None and spec["train"].get("log_stats"):
            stats = MagnitudeStats(spec["train"]["log_stats"])
        try:
            last = train(task, optimizer, policy, schedule,
                         TrainConfig(epochs=epochs, max_steps=spec["train"].get("max_steps"),
                                     average_after_nonmono=spec["train"].get("average_after_nonmono", 0),
                                     loss_multiplier=spec["train"].get("loss_multiplier", 1.0), stats=stats),
                         sink, progress, device)
        finally:
            progress.close()
            if sink is not None:
                sink.close()
        if stats is not None:
            stats.save(Path(spec["run_dir"]) / "stats.npz")
        if sink is not None:
            write_json(Path(spec["run_dir"]) / "summary.json", last)
        return last
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
