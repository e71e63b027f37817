"""The loop: epochs, the workers' agreement on requests (stop, checkpoint), checkpoints' state, one row per epoch.

It composes three parts that know nothing of each other's insides: the step (repro/step.py: closure, pairing, loss
multiplier, ``optimizer.step``, the policy's and callbacks' hooks), the epoch metrics (repro/epoch_metrics.py:
reductions over the ranks the policy's mask counts, evaluation, the columns every component declares) and this loop.
It never branches on a component's name.

`Trainer` is stateful: ``state_dict()`` / ``load_state_dict()`` hold everything needed to continue exactly, at an
epoch end or between two steps (epoch, counters, the epoch's running loss, model, optimizer, sync policy, step sizes,
callbacks, the batch feed's position, the task's carried state, RNG states), which is what checkpoints store.
Evaluation scores the sync policy's evaluation model (by default the workers' average in a separate copy), so
evaluating never changes training.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

import torch
import torch.distributed as dist

from repro.callbacks import Callback
from repro.context import RunContext
from repro.epoch_metrics import BASE_COLUMNS, EpochMetrics, evaluate, worker_spread  # noqa: F401 - the trainer's API
from repro.step import (BatchFeed, StepSizes, TrainStep, map_tensors,  # noqa: F401 - the trainer's API
                        rng_state, set_rng_state)
from repro.sync import SyncPolicy
from repro.task import Task

if TYPE_CHECKING:
    from repro.config import TrainSettings

STOP_CHECK_EVERY = 5  # steps between the checks for a stop or checkpoint request (see RequestCheck)


class RowSink(Protocol):
    def write(self, row: dict) -> None: ...


class Progress(Protocol):
    def start_epoch(self, epoch: int, total: int) -> None: ...
    def advance(self, samples: int, text: str | None) -> None: ...
    def end_epoch(self, row: dict) -> None: ...


class RequestCheck:
    """The workers' agreement on the requests ``ask()`` returns (stop, checkpoint due): a request any worker makes is
    granted on every worker after the same step. With several workers, each check posts one tiny all-reduce that
    nobody waits on until the next check (``post``, then ``agreed``): a blocking one holds every worker until the
    slowest arrives and, on a GPU, makes the host wait for the device's queued work. A request is acted on one
    check after it is posted; a single process acts at once."""

    def __init__(self, ask: Callable[[], list[bool]], count: int, context: RunContext):
        self.ask, self.count, self.device = ask, count, context.device
        self.distributed = context.distributed
        self.group = context.world_group
        self._posted = None  # (handle, flags) of the all-reduce posted at the last check

    def agreed(self) -> list[bool]:
        if not self.distributed:
            return self.ask()
        return self.settle() or [False] * self.count

    def agreed_now(self) -> list[bool]:
        """This moment's requests, agreed by every worker before any goes on (an epoch end's stop)."""
        self.post()
        return self.agreed()

    def post(self) -> None:
        if self.distributed:
            flags = torch.tensor([1.0 if r else 0.0 for r in self.ask()], device=self.device)
            self._posted = (dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flags)

    def settle(self) -> list[bool] | None:
        """The posted check's agreed requests (None when none is posted); every worker waits on it alike."""
        if self._posted is None:
            return None
        (handle, flags), self._posted = self._posted, None
        handle.wait()
        return [bool(f) for f in flags.tolist()]


class Trainer:
    """Train ``task`` with ``optimizer`` and the sync ``policy`` under ``settings`` (the run's validated
    ``TrainSettings``: epochs, max_steps, eval_sync, pairing, compile are read). ``callbacks``: paper-specific
    features (repro/callbacks.py). ``checkpoint_seconds``: also checkpoint mid-epoch this often."""

    def __init__(self, task: Task, optimizer: torch.optim.Optimizer, policy: SyncPolicy,
                 schedule: Callable[[int], float], settings: "TrainSettings", sink: RowSink | None,
                 progress: Progress, context: RunContext, callbacks: Iterable[Callback] = (),
                 checkpoint_seconds: float | None = None):
        self.task, self.optimizer, self.sync, self.settings = task, optimizer, policy, settings
        self.sink, self.progress, self.context = sink, progress, context
        self.device, self.world = context.device, context.world
        self.checkpoint_seconds = checkpoint_seconds
        self.callbacks = list(callbacks)
        self.step_sizes = StepSizes(optimizer, schedule)
        self.feed = BatchFeed(task.batches_from)
        self.step = TrainStep(task, optimizer, policy, self.feed.next, callbacks=self.callbacks,
                              step_sizes=self.step_sizes, pairing=settings.pairing, compile=settings.compile,
                              device=self.device)
        self.model = self.step.model
        self.metrics = EpochMetrics(task, self.model, optimizer, policy, self.callbacks, context, settings.eval_sync)
        self.epoch = 0  # epochs completed
        self.seen = 0.0  # samples drawn by every rank together
        self.train_seconds = 0.0  # training time of the epochs completed (this rank's)
        self.rows = 0  # rows written
        self.last_row: dict = {}  # the newest row: what run() returns, also when a resume finds nothing left to do
        self._epoch_started = time.perf_counter()  # training time of the open epoch counts from here
        self._last_checkpoint = time.monotonic()

    @property
    def columns(self) -> list[str]:
        """The metrics rows' columns (the CSV header), declared by the components."""
        return self.metrics.columns

    @property
    def counts(self) -> dict:
        """The run's counters (a copy): steps taken (iteration), gradient evaluations, samples every rank drew,
        training seconds of completed epochs, rows written."""
        return {"iteration": self.step.steps, "grad_evals": self.step.grad_evals, "seen": self.seen,
                "train_seconds": self.train_seconds, "rows": self.rows}

    @property
    def mid_epoch(self) -> bool:
        """Between two steps of an epoch (not at an epoch end)."""
        return not self.feed.epoch_done

    def _checkpoint_due(self) -> bool:
        every = self.checkpoint_seconds
        return bool(every) and time.monotonic() - self._last_checkpoint >= every

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] | None = None,
            on_epoch_end: Callable[["Trainer", dict], None] | None = None,
            on_checkpoint: Callable[["Trainer"], None] | None = None) -> dict:
        """Train from the current state to ``settings.epochs``. ``should_stop()`` (e.g. a signal arrived) ends the
        run after the current step on every worker: status "interrupted". ``on_epoch_end(trainer, row)`` runs after
        each row is logged (an epoch-end checkpoint). ``on_checkpoint(trainer)`` saves a mid-epoch checkpoint: when
        a stop is agreed mid-epoch, and every ``checkpoint_seconds``."""
        settings, step, stop = self.settings, self.step, False
        asks = should_stop is not None or (on_checkpoint is not None and bool(self.checkpoint_seconds))
        check = RequestCheck(lambda: [should_stop is not None and should_stop(), self._checkpoint_due()], 2,
                             self.context)
        while self.epoch < settings.epochs and not stop:
            epoch = self.epoch
            self.step_sizes.start_epoch(epoch)
            self.feed.start_epoch(epoch)
            self.model.train()
            self.progress.start_epoch(epoch, self.task.samples_per_epoch)
            if step.samples:  # resumed mid-epoch
                self.progress.advance(step.samples * self.world, None)
            self._epoch_started, shown_at = time.perf_counter(), 0.0
            while not stop:
                before = step.samples
                step(epoch)
                now = time.perf_counter()
                text = None
                if now - shown_at > 0.5:  # reading the loss syncs the device: twice a second at most
                    text = self.task.describe(step.running_loss())
                    shown_at = now
                self.progress.advance((step.samples - before) * self.world, text)
                stop = settings.max_steps is not None and step.steps >= settings.max_steps
                if self.feed.epoch_done or stop:  # every worker alike (all have as many batches)
                    check.settle()  # the epoch end asks again: a stop request stays, a due checkpoint is written
                    break  # an epoch end: logged and checkpointed before a stop request is honoured
                if asks and step.steps % STOP_CHECK_EVERY == 0:
                    stop_now, due = check.agreed()
                    if (stop_now or due) and on_checkpoint is not None:
                        paused = time.perf_counter()
                        on_checkpoint(self)
                        self._last_checkpoint = time.monotonic()
                        self._epoch_started += time.perf_counter() - paused  # writing is not training time
                    if stop_now:
                        return {"status": "interrupted", "epochs_done": self.epoch, "step": step.steps}
                    check.post()
            self.train_seconds += time.perf_counter() - self._epoch_started
            self.epoch += 1
            row = self.log_epoch(final=stop or self.epoch >= settings.epochs)
            if self.sink is not None:
                self.sink.write(row)
            self.rows += 1
            self.progress.end_epoch(row)
            step.reset_running()
            self.last_row = row
            stop = stop or row["status"] == "diverged"
            if on_epoch_end is not None:
                on_epoch_end(self, row)
                self._last_checkpoint = time.monotonic()
            if should_stop is not None and not stop and check.agreed_now()[0]:
                return {"status": "interrupted", "epochs_done": self.epoch}
        return self.last_row

    def log_epoch(self, final: bool) -> dict:
        """One metrics row: the loop's counters, then the epoch metrics (every rank takes part)."""
        measured, samples = self.metrics.row(float(self.step.loss_sum), self.step.samples, self.train_seconds, final)
        self.seen += samples
        per_epoch = self.task.samples_per_epoch
        return {"epoch": round(self.seen / per_epoch, 4) if per_epoch else self.epoch,
                "iteration": self.step.steps, "grad_evals": self.step.grad_evals, **measured}

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """This rank's whole training state (tensors on the CPU), at an epoch end or between two steps."""
        counts = self.counts
        if self.mid_epoch:  # the open epoch's training time so far
            counts["train_seconds"] += time.perf_counter() - self._epoch_started
        return {
            "epoch": self.epoch,
            "counts": counts,
            "running": {"loss_sum": float(self.step.loss_sum), "samples": self.step.samples},  # the epoch's so far
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "sync": _to_cpu(self.sync.state_dict()),  # quantized-ps's residuals, robust's frozen model
            "step_sizes": self.step_sizes.state_dict(),
            "callbacks": [_to_cpu(cb.state_dict()) for cb in self.callbacks],
            "feed": self.feed.state_dict(),
            "task": _to_cpu(self.task.state_dict()),
            "rng": rng_state(),
            "last_row": json.loads(json.dumps(self.last_row, default=str)),  # plain values: weights_only loads
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        counts = state["counts"]
        self.step.steps, self.step.grad_evals = int(counts["iteration"]), int(counts["grad_evals"])
        self.seen, self.train_seconds = counts["seen"], counts["train_seconds"]
        self.rows = int(counts.get("rows", self.epoch))
        self.last_row = dict(state.get("last_row", {}))
        running = state.get("running", {"loss_sum": 0.0, "samples": 0})
        self.step.loss_sum.fill_(running["loss_sum"])
        self.step.samples = int(running["samples"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sync.load_state_dict(state["sync"])
        if len(state["callbacks"]) != len(self.callbacks):
            raise ValueError(f"the state holds {len(state['callbacks'])} callbacks' states, this trainer has "
                             f"{len(self.callbacks)}: built from other train settings")
        for callback, cb_state in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(cb_state)
            if hasattr(callback, "to"):
                callback.to(self.device)
        if "step_sizes" in state:
            self.step_sizes.load_state_dict(state["step_sizes"])
        self.feed.load_state_dict({"rng": [], **state["feed"]})
        self.task.load_state_dict(state.get("task", {}))  # after the feed: opening a stream may reset it
        set_rng_state(state["rng"])  # after the feed: regenerating used batches may draw random numbers


def _to_cpu(value):
    return map_tensors(value, lambda t: t.detach().cpu().clone())


def train(task: Task, optimizer: torch.optim.Optimizer, policy: SyncPolicy, schedule: Callable[[int], float],
          settings: "TrainSettings", sink: RowSink | None, progress: Progress, context: RunContext,
          callbacks: Iterable[Callback] = ()) -> dict:
    """Train from scratch to ``settings.epochs`` (a Trainer without checkpoints)."""
    return Trainer(task, optimizer, policy, schedule, settings, sink, progress, context, callbacks).run()
