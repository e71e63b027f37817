"""The training step, usable without the loop: closure (next batch, pairing, loss, callbacks' objective, backward,
the policy's ``on_gradients``), ``optimizer.step(closure)``, and the hooks around it (callbacks' and the policy's
``before_step`` / ``after_step``). The loop (repro/trainer.py) runs it over epochs; a federated driver can run it
for a client's K local steps on batches of its own (``next_batch``) and replace the loop.

Also here: the batch stream the loop feeds the step from (``BatchFeed``), the optimizer's scheduled step sizes
(``StepSizes``) and the RNG state helpers checkpoints use.
"""
from __future__ import annotations

import random
from typing import Callable, Iterable, Iterator

import torch

from repro.callbacks import Callback
from repro.optim import scaled_hparams
from repro.sync import SyncPolicy
from repro.task import Batch, Task


class TrainStep:
    """One optimizer step of ``task.model`` on batches from ``next_batch()``.

    Built once: ``task.model`` becomes what the policy's ``wrap`` returns (and ``torch.compile``'s module with
    ``compile``); ``self.model`` is the model itself, which every hook, the optimizer and checkpoints get.
    ``pairing``: a step's gradient evaluations each draw a batch (``fresh-batch``) or all reuse the batch and the
    task's carried state of the first (``same-batch``). ``step_sizes``: multiplies the optimizer's scaled
    hyperparameters by a batch's ``lr_scale`` while its step runs (None: no scaling).

    Tallies, read and reset by the caller: ``steps``, ``grad_evals`` (cumulative), ``loss_sum`` (on the device: no
    host sync per step) and ``samples`` (the running loss since ``reset_running``; a batch's samples count once)."""

    def __init__(self, task: Task, optimizer: torch.optim.Optimizer, policy: SyncPolicy,
                 next_batch: Callable[[], Batch], *, callbacks: Iterable[Callback] = (),
                 step_sizes: "StepSizes | None" = None, pairing: str = "fresh-batch", compile: bool = False,
                 device=None):
        self.task, self.optimizer, self.policy, self.next_batch = task, optimizer, policy, next_batch
        self.callbacks = callbacks if isinstance(callbacks, list) else list(callbacks)  # a list stays shared
        self.step_sizes = step_sizes
        self.pairing = pairing
        self.model = task.model  # the model itself: optimizer, policy hooks, callbacks, checkpoints, evaluation
        task.model = policy.wrap(self.model)  # what training's forward runs through (every-step: a DDP wrapper)
        if compile:
            # The outermost module is compiled (over DDP: torch splits the graph at bucket boundaries); the model
            # itself stays uncompiled, so checkpoints keep their keys and evaluation's copy is a plain module.
            task.model = torch.compile(task.model)
        self.steps = 0
        self.grad_evals = 0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.samples = 0
        # pairing "same-batch": the batch the step's first closure call drew, and the task's carried state (an
        # LSTM's hidden state) before it, so every evaluation of the step starts from the same data and state. None
        # between steps, so checkpoints (always between steps) need not hold it.
        self._step_batch: tuple[Batch, dict] | None = None

    def closure(self) -> torch.Tensor:
        drawn = self._step_batch is None
        if drawn:
            batch = self.next_batch()
            if self.pairing == "same-batch":  # a copy: a task may update its carried tensors in place
                self._step_batch = (batch, map_tensors(self.task.state_dict(), torch.Tensor.clone))
        else:
            batch, task_state = self._step_batch
            self.task.load_state_dict(task_state)
        if self.step_sizes is not None:
            self.step_sizes.apply(batch.lr_scale)
        self.optimizer.zero_grad(set_to_none=True)
        objective, data_loss = self.task.training_loss(batch)
        for callback in self.callbacks:
            objective = callback.on_objective(objective)
        objective.backward()
        self.policy.on_gradients(self.model)
        if drawn:  # a batch's samples count once: the epoch's length and the running loss are over batches drawn
            self.loss_sum += data_loss.detach().double() * batch.samples
            self.samples += batch.samples
        self.grad_evals += 1
        return objective

    def __call__(self, epoch: int) -> None:
        """One optimizer step (``epoch``: the epoch it belongs to, for callbacks)."""
        for callback in self.callbacks:
            callback.before_step(self.model, epoch)
        self.policy.before_step(self.model)
        self.optimizer.step(self.closure)
        self._step_batch = None
        for callback in self.callbacks:
            callback.after_step(self.model, epoch)
        if self.step_sizes is not None:
            self.step_sizes.apply(1.0)  # the scheduled values stay in place for logging
        self.policy.after_step(self.model)
        self.steps += 1

    def running_loss(self) -> float:
        """This rank's mean loss since ``reset_running`` (reads the device)."""
        return float(self.loss_sum) / max(self.samples, 1)

    def reset_running(self) -> None:
        self.loss_sum.zero_()
        self.samples = 0


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


def map_tensors(value, fn: Callable[[torch.Tensor], torch.Tensor]):
    """``value`` with ``fn`` applied to every tensor in it (inside dicts, lists and tuples too)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # this rank's device only: another rank's, or a device missing at resume, is not ours
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # checkpoints written before: every visible device's state
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda)
