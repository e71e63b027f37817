"""The one training loop: task x optimizer x sync policy. It never branches on a component's name."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch
import torch.distributed as dist

from repro.iterate_average import TriggeredIterateAverage
from repro.optim import optimizer_metrics, scaled_hparams
from repro.sync import SyncPolicy, float_state
from repro.task import Batch, Task

BASE_COLUMNS = ("epoch", "iteration", "grad_evals", "wall_seconds", "train_loss", "lr", "clip_fraction",
                "comm_rounds", "comm_bytes", "worker_spread", "averaged_iterate")


@dataclass
class TrainConfig:
    epochs: int
    max_steps: int | None = None  # stop early (smoke tests); the last row is still a full evaluation
    average_after_nonmono: int = 0  # > 0: evaluate averaged iterates once val_loss stalls (authors' LM code)
    loss_multiplier: float = 1.0  # the optimizer sees c x the objective (AdamW paper's scale-freeness test)
    stats: object | None = None  # a repro.stats.MagnitudeStats recording gradient/update histograms


class RowSink(Protocol):
    def write(self, row: dict) -> None: ...


class Progress(Protocol):
    def start_epoch(self, epoch: int, total: int) -> None: ...
    def advance(self, samples: int, text: str | None) -> None: ...
    def end_epoch(self, row: dict) -> None: ...


class BatchFeed:
    """Hands out one batch per closure call. A two-gradient optimizer may draw past the end of an epoch;
    it then reads on into the next epoch's stream, which the trainer takes as the epoch boundary."""

    def __init__(self, batches: Callable[[int], Iterator[Batch]]):
        self._batches = batches
        self.epoch = -1
        self.rolled_over = False

    def open(self, epoch: int) -> None:
        self.epoch, self.rolled_over = epoch, False
        self._it = iter(self._batches(epoch))
        self._ahead = next(self._it, None)

    def next(self) -> Batch:
        if self._ahead is None:
            self.open(self.epoch + 1)
            self.rolled_over = True
        batch, self._ahead = self._ahead, next(self._it, None)
        return batch

    @property
    def epoch_done(self) -> bool:
        return self._ahead is None or self.rolled_over


def _all_sum(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)  # bookkeeping, not counted as the algorithm's communication
    return t.tolist()


class StepSizes:
    """The optimizer's ``scaled_hparams`` (lr; lr and clip for clipped SGD): lr_0 x schedule(epoch), times a
    batch's ``lr_scale`` while that batch's step runs."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]):
        self.optimizer, self.schedule = optimizer, schedule
        keys = scaled_hparams(optimizer)
        for group in optimizer.param_groups:  # lr_0, for schedules and AdamW's lr_t / lr_0
            group.setdefault("initial_lr", group["lr"])
        self.initial = [{k: g[k] for k in keys} for g in optimizer.param_groups]
        self.scheduled = self.initial

    def start_epoch(self, epoch: int) -> None:
        factor = self.schedule(epoch)
        self.scheduled = [{k: v * factor for k, v in values.items()} for values in self.initial]
        self.apply(1.0)

    def apply(self, scale: float) -> None:
        for group, values in zip(self.optimizer.param_groups, self.scheduled):
            for k, v in values.items():
                group[k] = v * scale


def train(task: Task, optimizer: torch.optim.Optimizer, sync: SyncPolicy, schedule: Callable[[int], float],
          config: TrainConfig, sink: RowSink | None, progress: Progress, device) -> dict:
    model = task.model
    world = dist.get_world_size() if dist.is_initialized() else 1
    step_sizes = StepSizes(optimizer, schedule)
    feed = BatchFeed(task.train_batches)
    averager = TriggeredIterateAverage(config.average_after_nonmono) if config.average_after_nonmono else None
    # Losses stay on the device until logged: no host sync per step (the progress text reads them rarely).
    loss_sum, samples = torch.zeros((), dtype=torch.float64, device=device), 0
    counts = {"iteration": 0, "grad_evals": 0, "seen": 0.0, "train_seconds": 0.0}

    def closure():
        nonlocal loss_sum, samples
        batch = feed.next()
        step_sizes.apply(batch.lr_scale)
        optimizer.zero_grad(set_to_none=True)
        objective, data_loss = task.training_loss(batch)
        if config.loss_multiplier != 1.0:  # logged losses stay unscaled
            objective = objective * config.loss_multiplier
        objective.backward()
        sync.on_gradients(model)
        loss_sum += data_loss.detach().double() * batch.samples
        samples += batch.samples
        counts["grad_evals"] += 1
        return objective

    epoch, stop, last_row = 0, False, {}
    while epoch < config.epochs and not stop:
        step_sizes.start_epoch(epoch)
        if feed.epoch != epoch:
            feed.open(epoch)
        model.train()
        progress.start_epoch(epoch, getattr(task, "samples_per_epoch", 0))
        recording = config.stats is not None and config.stats.wants(epoch)
        started, shown_at = time.perf_counter(), 0.0
        while not stop:
            before = samples
            if recording:
                config.stats.before_step(model)
            optimizer.step(closure)
            if recording:
                config.stats.after_step(model, epoch)
            step_sizes.apply(1.0)  # the scheduled values stay in place for logging
            sync.after_step(model)
            counts["iteration"] += 1
            now = time.perf_counter()
            text = None
            if now - shown_at > 0.5:  # reading the loss syncs the device: twice a second at most
                text, shown_at = task.describe(float(loss_sum) / max(samples, 1)), now
            progress.advance((samples - before) * world, text)
            stop = config.max_steps is not None and counts["iteration"] >= config.max_steps
            if feed.epoch_done:
                break
        counts["train_seconds"] += time.perf_counter() - started
        epoch += 1
        counts["epochs_done"] = epoch
        row = log_epoch(task, optimizer, sync, averager, counts, float(loss_sum), samples, world, device,
                        final=stop or epoch >= config.epochs)
        if sink is not None:
            sink.write(row)
        progress.end_epoch(row)
        loss_sum.zero_()
        samples = 0
        last_row = row
        stop = stop or row["status"] == "diverged"
    return last_row


def log_epoch(task: Task, optimizer, sync: SyncPolicy, averager: TriggeredIterateAverage | None, counts: dict,
              loss_sum: float, samples: int, world: int, device, final: bool) -> dict:
    """One metrics row: training statistics reduced over workers, then evaluation of the averaged model."""
    total_loss, total_samples = _all_sum([loss_sum, samples], device)
    train_loss = total_loss / max(total_samples, 1)
    counts["seen"] += total_samples
    per_epoch = getattr(task, "samples_per_epoch", 0)
    diverged = not math.isfinite(train_loss)  # identical on every worker: all stop together
    row = {"epoch": round(counts["seen"] / per_epoch, 4) if per_epoch else counts["epochs_done"],
           "iteration": counts["iteration"], "grad_evals": counts["grad_evals"],
           "wall_seconds": round(counts["train_seconds"], 3), "train_loss": train_loss,
           "lr": optimizer.param_groups[0]["lr"],
           "status": "diverged" if diverged else ("done" if final else "")}
    stats = optimizer_metrics(optimizer)
    if stats:
        names = sorted(stats)
        row.update({n: v / world for n, v in zip(names, _all_sum([stats[n] for n in names], device))})
    if not diverged:
        splits = task.final_splits if final else task.eval_splits
        if averager is not None and averager.active:
            sync.synchronize(task.model)
            averager.add(task.model)
            with averager.swapped_in(task.model):
                row.update(evaluate(task, sync, splits, device), averaged_iterate=averager.count)
        else:
            row.update(evaluate(task, sync, splits, device))
            if averager is not None:
                averager.observe(row["val_loss"])
    row.update(comm_rounds=sync.comm_rounds, comm_bytes=sync.comm_bytes)
    return row


@torch.no_grad()
def evaluate(task: Task, sync: SyncPolicy, splits: tuple[str, ...], device) -> dict[str, float]:
    """Metrics of the synchronized (averaged) model; each worker scores its shard of every split."""
    sync.synchronize(task.model)
    task.model.eval()
    metrics: dict[str, float] = {}
    for split in splits:
        sums = task.eval_sums(split).to(device=device, dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(sums)
        metrics.update(task.eval_metrics(split, sums.cpu()))
    metrics["worker_spread"] = worker_spread(task.model)
    task.model.train()
    return metrics


@torch.no_grad()
def worker_spread(model: torch.nn.Module) -> float:
    """Largest difference of any parameter or float buffer (BatchNorm statistics) between two workers: 0 when
    all hold the same model."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in float_state(model)])
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return 0.0
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).max())
