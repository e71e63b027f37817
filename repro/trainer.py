"""The one training loop: task x optimizer x sync policy (+ callbacks). It never branches on a component's name.

`Trainer` is stateful: ``state_dict()`` / ``load_state_dict()`` hold everything needed to continue exactly, at an
epoch end or between two steps (epoch, counters, the epoch's running loss, model, optimizer, sync policy, step sizes,
callbacks, the batch feed's position, the task's carried state, RNG states), which is what checkpoints store. Evaluation scores the sync policy's evaluation
model (by default the workers' average in a separate copy), so evaluating never changes training.
"""
from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import torch
import torch.distributed as dist

from repro.callbacks import Callback, GradientUpdateStats, LossMultiplier
from repro.config import PAIRING_MODES
from repro.errors import UsageError
from repro.optim import optimizer_metrics, scaled_hparams
from repro.sync import SyncPolicy, float_state, same_on_every_worker
from repro.task import Batch, Task

BASE_COLUMNS = ("epoch", "iteration", "grad_evals", "wall_seconds", "train_loss", "lr", "clip_fraction",
                "comm_rounds", "comm_bytes", "eval_comm_rounds", "eval_comm_bytes", "worker_spread",
                "averaged_iterate")
EVAL_SYNC = ("copy", "in-place")  # train.eval_sync: what evaluation scores (see log_epoch)
STOP_CHECK_EVERY = 5  # steps between the checks for a stop or checkpoint request (see RequestCheck)


@dataclass
class TrainConfig:
    epochs: int
    max_steps: int | None = None  # stop early (smoke tests); the last row is still a full evaluation
    eval_sync: str = "copy"  # "copy": score the average in a copy; "in-place": average the training models first
    pairing: str = "fresh-batch"  # a step's gradient evaluations: each on a new batch, or all on its first batch
    checkpoint_seconds: float | None = None  # also checkpoint mid-epoch this often (--checkpoint-minutes)
    compile: bool = False  # torch.compile the training forward (evaluation runs the model eagerly)
    callbacks: list[Callback] = field(default_factory=list)
    # Kept for callers that set them directly; turned into callbacks.
    loss_multiplier: float = 1.0
    stats: object | None = None


class RowSink(Protocol):
    def write(self, row: dict) -> None: ...


class Progress(Protocol):
    def start_epoch(self, epoch: int, total: int) -> None: ...
    def advance(self, samples: int, text: str | None) -> None: ...
    def end_epoch(self, row: dict) -> None: ...


class BatchFeed:
    """Hands out one batch per closure call. A two-gradient optimizer may draw past the end of an epoch; it then
    reads on into the next epoch's stream (``rolled_over``), which the trainer takes as the epoch boundary: the
    next epoch continues that stream (``start_epoch``) until it runs out.

    ``state_dict()`` is the position of the batch stream: the epoch whose batches come next and how many of them were
    handed out already. At an epoch end that is 0, or the batches a roll-over drew, which are regenerated on load
    under the RNG states recorded before each draw, so random augmentation reproduces exactly. Between two steps of
    an epoch (``mid_epoch``) the batches handed out are skipped (``batches(epoch, skip)``: no work for them) and only
    the batch read ahead is drawn again, under the RNG state recorded before it was drawn."""

    def __init__(self, batches: Callable[[int, int], Iterator[Batch]]):
        self._batches = batches
        self.epoch = -1  # the epoch of the open stream; -1: none open
        self.rolled_over = False
        self.taken = 0  # batches handed out from the open stream
        self._ahead: Batch | None = None
        self._draw_rng: list[dict] = []  # RNG state before each draw from a rolled-over stream
        self._ahead_rng: dict | None = None  # RNG state before the batch read ahead was drawn
        self._replay: list[dict] = []

    def open(self, epoch: int, rolled_over: bool = False, skip: int = 0) -> None:
        self.epoch, self.rolled_over, self.taken, self._draw_rng = epoch, rolled_over, skip, []
        self._it = iter(self._batches(epoch, skip))
        self._ahead = self._draw()

    def start_epoch(self, epoch: int) -> None:
        """Called by the trainer when ``epoch`` begins: continue the stream a roll-over opened, else open it."""
        if self.epoch == epoch and self.rolled_over:
            self.rolled_over, self._draw_rng = False, []
        elif self.epoch != epoch:
            self.open(epoch)

    def _draw(self) -> Batch | None:
        if self._replay:
            set_rng_state(self._replay.pop(0))
        self._ahead_rng = rng_state()  # a few microseconds: kept for a mid-epoch checkpoint
        if self.rolled_over:
            self._draw_rng.append(self._ahead_rng)
        return next(self._it, None)

    def next(self) -> Batch:
        if self._ahead is None:
            self.open(self.epoch + 1, rolled_over=True)
        batch, self._ahead = self._ahead, self._draw()
        self.taken += 1
        return batch

    @property
    def epoch_done(self) -> bool:
        return self._ahead is None or self.rolled_over

    def state_dict(self) -> dict:
        """The stream position: at an epoch end, or between two steps of an epoch (``mid_epoch``)."""
        if not self.epoch_done and self.epoch >= 0:
            return {"epoch": self.epoch, "taken": self.taken, "rng": [], "mid_epoch": True,
                    "ahead_rng": self._ahead_rng}
        if not self.rolled_over:  # the epoch's stream ran out (or none is open): the next one opens fresh
            return {"epoch": self.epoch + 1 if self.epoch >= 0 else 0, "taken": 0, "rng": []}
        return {"epoch": self.epoch, "taken": self.taken, "rng": list(self._draw_rng)}

    def load_state_dict(self, state: dict) -> None:
        """Restores the position; the caller sets the RNG state afterwards (regenerating draws random numbers)."""
        self.epoch, self.rolled_over, self.taken, self._ahead, self._draw_rng = -1, False, 0, None, []
        if state.get("mid_epoch"):
            self._replay = [state["ahead_rng"]]
            self.open(state["epoch"], skip=state["taken"])
            self._replay = []
            return
        if state["taken"] == 0:
            return  # start_epoch(state["epoch"]) opens the stream
        self._replay = list(state["rng"])
        self.open(state["epoch"], rolled_over=True)
        for _ in range(state["taken"]):
            self.next()
        self._replay = []


def _all_sum(values: list[float], device, op=dist.ReduceOp.SUM) -> list[float]:
    """``values`` summed over the workers (or reduced by ``op``)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=op)  # bookkeeping, not counted as the algorithm's communication
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

    def state_dict(self) -> dict:
        return {"initial": [dict(v) for v in self.initial], "scheduled": [dict(v) for v in self.scheduled]}

    def load_state_dict(self, state: dict) -> None:
        self.initial = [dict(v) for v in state["initial"]]
        self.scheduled = [dict(v) for v in state["scheduled"]]
        self.apply(1.0)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RequestCheck:
    """The workers' agreement on the requests ``ask()`` returns (stop, checkpoint due): a request any worker makes is
    granted on every worker after the same step. With several workers, each check posts one tiny all-reduce that
    nobody waits on until the next check (``post``, then ``agreed``): a blocking one holds every worker until the
    slowest arrives and, on a GPU, makes the host wait for the device's queued work. A request is acted on one
    check after it is posted; a single process acts at once."""

    def __init__(self, ask: Callable[[], list[bool]], count: int, device: torch.device):
        self.ask, self.count, self.device = ask, count, device
        self.distributed = dist.is_initialized()
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
            self._posted = (dist.all_reduce(flags, op=dist.ReduceOp.MAX, async_op=True), flags)

    def settle(self) -> list[bool] | None:
        """The posted check's agreed requests (None when none is posted); every worker waits on it alike."""
        if self._posted is None:
            return None
        (handle, flags), self._posted = self._posted, None
        handle.wait()
        return [bool(f) for f in flags.tolist()]


class Trainer:
    def __init__(self, task: Task, optimizer: torch.optim.Optimizer, sync: SyncPolicy,
                 schedule: Callable[[int], float], config: TrainConfig, sink: RowSink | None, progress: Progress,
                 device):
        self.task, self.optimizer, self.sync, self.config = task, optimizer, sync, config
        self.sink, self.progress, self.device = sink, progress, device
        if config.eval_sync not in EVAL_SYNC:
            raise UsageError(f"eval_sync must be one of {', '.join(EVAL_SYNC)}, got {config.eval_sync!r}")
        if config.pairing not in PAIRING_MODES:
            raise UsageError(f"pairing must be one of {', '.join(PAIRING_MODES)}, got {config.pairing!r}")
        self.model = task.model  # the model itself: optimizer, policy hooks, callbacks, checkpoints, evaluation
        task.model = sync.wrap(self.model)  # what training's forward runs through (every-step: a DDP wrapper)
        if config.compile:
            # The outermost module is compiled (over DDP: torch splits the graph at bucket boundaries); the model
            # itself stays uncompiled, so checkpoints keep their keys and evaluation's copy is a plain module.
            task.model = torch.compile(task.model)
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.callbacks = list(config.callbacks)
        if config.loss_multiplier != 1.0:
            self.callbacks.append(LossMultiplier(config.loss_multiplier))
        if config.stats is not None:
            self.callbacks.append(GradientUpdateStats(config.stats))
        self.step_sizes = StepSizes(optimizer, schedule)
        self.feed = BatchFeed(task.batches_from)
        self.epoch = 0  # epochs completed
        self.counts = {"iteration": 0, "grad_evals": 0, "seen": 0.0, "train_seconds": 0.0, "rows": 0}
        # Losses stay on the device until logged: no host sync per step (the progress text reads them rarely).
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._samples = 0
        self._epoch_started = time.perf_counter()  # training time of the open epoch counts from here
        self._last_checkpoint = time.monotonic()
        # pairing "same-batch": the batch the step's first closure call drew, and the task's carried state (an LSTM's
        # hidden state) before it, so every evaluation of the step starts from the same data and state. None between
        # steps, so checkpoints (always between steps) need not hold it.
        self._step_batch: tuple[Batch, dict] | None = None

    # -- one step -------------------------------------------------------------------------------------------------
    def _closure(self):
        drawn = self._step_batch is None
        if drawn:
            batch = self.feed.next()
            if self.config.pairing == "same-batch":
                self._step_batch = (batch, self.task.state_dict())
        else:
            batch, task_state = self._step_batch
            self.task.load_state_dict(task_state)
        self.step_sizes.apply(batch.lr_scale)
        self.optimizer.zero_grad(set_to_none=True)
        objective, data_loss = self.task.training_loss(batch)
        for callback in self.callbacks:
            objective = callback.on_objective(objective)
        objective.backward()
        self.sync.on_gradients(self.model)
        if drawn:  # a batch's samples count once: the epoch's length and the running loss are over batches drawn
            self._loss_sum += data_loss.detach().double() * batch.samples
            self._samples += batch.samples
        self.counts["grad_evals"] += 1
        return objective

    @property
    def mid_epoch(self) -> bool:
        """Between two steps of an epoch (not at an epoch end)."""
        return not self.feed.epoch_done

    def _checkpoint_due(self) -> bool:
        every = self.config.checkpoint_seconds
        return bool(every) and time.monotonic() - self._last_checkpoint >= every

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] | None = None,
            on_epoch_end: Callable[["Trainer", dict], None] | None = None,
            on_checkpoint: Callable[["Trainer"], None] | None = None) -> dict:
        """Train from the current state to ``config.epochs``. ``should_stop()`` (e.g. a signal arrived) ends the
        run after the current step on every worker: status "interrupted". ``on_epoch_end(trainer, row)`` runs after
        each row is logged (an epoch-end checkpoint). ``on_checkpoint(trainer)`` saves a mid-epoch checkpoint: when
        a stop is agreed mid-epoch, and every ``config.checkpoint_seconds``."""
        config, last_row, stop = self.config, {}, False
        asks = should_stop is not None or (on_checkpoint is not None and bool(config.checkpoint_seconds))
        check = RequestCheck(lambda: [should_stop is not None and should_stop(), self._checkpoint_due()], 2,
                             self.device)
        while self.epoch < config.epochs and not stop:
            epoch = self.epoch
            self.step_sizes.start_epoch(epoch)
            self.feed.start_epoch(epoch)
            self.model.train()
            self.progress.start_epoch(epoch, self.task.samples_per_epoch)
            if self._samples:  # resumed mid-epoch
                self.progress.advance(self._samples * self.world, None)
            self._epoch_started, shown_at = time.perf_counter(), 0.0
            while not stop:
                before = self._samples
                for callback in self.callbacks:
                    callback.before_step(self.model, epoch)
                self.optimizer.step(self._closure)
                self._step_batch = None
                for callback in self.callbacks:
                    callback.after_step(self.model, epoch)
                self.step_sizes.apply(1.0)  # the scheduled values stay in place for logging
                self.sync.after_step(self.model)
                self.counts["iteration"] += 1
                now = time.perf_counter()
                text = None
                if now - shown_at > 0.5:  # reading the loss syncs the device: twice a second at most
                    text = self.task.describe(float(self._loss_sum) / max(self._samples, 1))
                    shown_at = now
                self.progress.advance((self._samples - before) * self.world, text)
                stop = config.max_steps is not None and self.counts["iteration"] >= config.max_steps
                if self.feed.epoch_done or stop:  # every worker alike (all have as many batches)
                    check.settle()  # the epoch end asks again: a stop request stays, a due checkpoint is written
                    break  # an epoch end: logged and checkpointed before a stop request is honoured
                if asks and self.counts["iteration"] % STOP_CHECK_EVERY == 0:
                    stop_now, due = check.agreed()
                    if (stop_now or due) and on_checkpoint is not None:
                        paused = time.perf_counter()
                        on_checkpoint(self)
                        self._last_checkpoint = time.monotonic()
                        self._epoch_started += time.perf_counter() - paused  # writing is not training time
                    if stop_now:
                        return {"status": "interrupted", "epochs_done": self.epoch,
                                "step": self.counts["iteration"]}
                    check.post()
            self.counts["train_seconds"] += time.perf_counter() - self._epoch_started
            self.epoch += 1
            row = self.log_epoch(final=stop or self.epoch >= config.epochs)
            if self.sink is not None:
                self.sink.write(row)
            self.counts["rows"] += 1
            self.progress.end_epoch(row)
            self._loss_sum.zero_()
            self._samples = 0
            last_row = row
            stop = stop or row["status"] == "diverged"
            if on_epoch_end is not None:
                on_epoch_end(self, row)
                self._last_checkpoint = time.monotonic()
            if should_stop is not None and not stop and check.agreed_now()[0]:
                return {"status": "interrupted", "epochs_done": self.epoch}
        return last_row

    # -- one row per evaluation -----------------------------------------------------------------------------------
    def log_epoch(self, final: bool) -> dict:
        """One metrics row: training statistics reduced over workers, then evaluation of the policy's model."""
        task, counts = self.task, self.counts
        total_loss, total_samples = _all_sum([float(self._loss_sum), self._samples], self.device)
        # a run's training time is its slowest worker's (with --sync none they drift apart between two checks)
        (slowest_seconds,) = _all_sum([counts["train_seconds"]], self.device, op=dist.ReduceOp.MAX)
        train_loss = total_loss / max(total_samples, 1)
        counts["seen"] += total_samples
        per_epoch = task.samples_per_epoch
        diverged = not math.isfinite(train_loss) or not self._parameters_finite()  # identical on every worker
        row = {"epoch": round(counts["seen"] / per_epoch, 4) if per_epoch else self.epoch,
               "iteration": counts["iteration"], "grad_evals": counts["grad_evals"],
               "wall_seconds": round(slowest_seconds, 3), "train_loss": train_loss,
               "lr": self.optimizer.param_groups[0]["lr"],
               "status": "diverged" if diverged else ("done" if final else "")}
        stats = optimizer_metrics(self.optimizer)
        if stats:
            names = sorted(stats)
            row.update({n: v / self.world for n, v in zip(names, _all_sum([stats[n] for n in names], self.device))})
        if not diverged:
            row["worker_spread"] = worker_spread(self.model)  # how far apart the training models are
            if self.config.eval_sync == "in-place":
                self.sync.synchronize(self.model)  # the authors' evaluation: average the training models
            model = self.sync.eval_model(self.model)
            splits = task.final_splits if final else task.eval_splits

            def score() -> dict:
                return evaluate(task, model, splits, self.device)

            for callback in self.callbacks:
                score = (lambda cb, inner: (lambda: cb.evaluate(model, inner)))(callback, score)
            row.update(score())
        row.update(comm_rounds=self.sync.comm_rounds, comm_bytes=self.sync.comm_bytes,
                   eval_comm_rounds=self.sync.eval_comm_rounds, eval_comm_bytes=self.sync.eval_comm_bytes)
        return row

    def _parameters_finite(self) -> bool:
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        return _all_sum([0.0 if finite else 1.0], self.device)[0] == 0.0

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """This rank's whole training state (tensors on the CPU), at an epoch end or between two steps."""
        counts = dict(self.counts)
        if self.mid_epoch:  # the open epoch's training time so far
            counts["train_seconds"] += time.perf_counter() - self._epoch_started
        return {
            "epoch": self.epoch,
            "counts": counts,
            "running": {"loss_sum": float(self._loss_sum), "samples": self._samples},  # the epoch's loss so far
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "sync": self.sync.state_dict(),
            "step_sizes": self.step_sizes.state_dict(),
            "callbacks": [_to_cpu(cb.state_dict()) for cb in self.callbacks],
            "feed": self.feed.state_dict(),
            "task": _to_cpu(self.task.state_dict()),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.counts.update(state["counts"])
        running = state.get("running", {"loss_sum": 0.0, "samples": 0})
        self._loss_sum.fill_(running["loss_sum"])
        self._samples = int(running["samples"])
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
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def train(task: Task, optimizer: torch.optim.Optimizer, sync: SyncPolicy, schedule: Callable[[int], float],
          config: TrainConfig, sink: RowSink | None, progress: Progress, device) -> dict:
    """Train from scratch to ``config.epochs`` (a Trainer without checkpoints)."""
    return Trainer(task, optimizer, sync, schedule, config, sink, progress, device).run()


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module, splits: tuple[str, ...], device) -> dict[str, float]:
    """Metrics of ``model`` (the task scores its ``model`` attribute: the evaluated one is swapped in for the
    duration); each worker scores its shard of every split and the sums are reduced."""
    training_model = task.model
    task.model = model
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    try:
        for split in splits:
            sums = task.eval_sums(split).to(device=device, dtype=torch.float64)
            if dist.is_initialized():
                dist.all_reduce(sums)
            metrics.update(task.eval_metrics(split, sums.cpu()))
    finally:
        model.train(was_training)
        task.model = training_model
    return metrics


@torch.no_grad()
def worker_spread(model: torch.nn.Module) -> float:
    """Largest difference of any parameter or float buffer (BatchNorm statistics) between two workers: 0 when
    all hold the same model. Identical models (every-step, or right after an average) are recognized by a digest
    (16 bytes sent); otherwise one all-reduce of the model's size twice over, in its own precision: the largest and
    smallest values are exact in it, and only their difference is taken in float64."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return 0.0
    tensors = [t.detach() for t in float_state(model)]
    if same_on_every_worker(tensors):
        return 0.0
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
    extremes = torch.cat([flat, -flat])
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)  # [max, -min] in one round
    high, low = extremes[: flat.numel()].double(), -extremes[flat.numel():].double()
    return float((high - low).max())
