"""An epoch's metrics row: every rank's tallies gathered in one collective, reduced over the ranks the sync policy's
mask counts, then evaluation and the columns every component declares.

Columns come from the components, never from a fixed list naming one of them: the task's ``metric_columns``, the
optimizer's (``metric_columns`` beside its ``pop_metrics``: clipped SGD's ``clip_fraction``), the sync policy's
(``metric_columns``, values from ``epoch_metrics``), the callbacks' (NT-ASGD's ``averaged_iterate``), and the ledger's
communication columns (``LEDGER_COLUMNS``, and bytes per role when the run's ranks have several roles).

Reductions (all over the counted ranks, the mask of the policy, unless said otherwise):
- ``train_loss``: sum of the counted ranks' loss sums / their samples; a rank left out never contributes a value
  (its NaN stays out: nothing is multiplied by 0).
- ``status`` diverged: a non-finite training loss or a non-finite parameter on a counted rank.
- ``worker_spread``: the largest difference of any parameter or float buffer between two counted ranks.
- optimizer statistics: the counted ranks' mean.
- evaluation: the policy's evaluation model; when it is each rank's own (``averages_for_evaluation = False``), the
  counted ranks' scores only.
- ``wall_seconds``: the slowest rank's training time (every rank); ``epoch``: the samples every rank drew.
- communication: each ledger column is the mean over every rank (a faulty rank's traffic is traffic), an integer
  where it is one, so every-step, periodic and none write the numbers they always have; ``bytes_sent_<role>`` the
  mean over the ranks of that role.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.distributed as dist

from repro.callbacks import Callback
from repro.context import RunContext
from repro.errors import UsageError
from repro.optim import optimizer_metrics
from repro.sync import LEDGER_COLUMNS, ROLE_LEDGER_COLUMNS, SyncPolicy, float_state, same_on_every_worker
from repro.task import Task

# The columns of every run; each component adds its own (see row_columns).
BASE_COLUMNS = ("epoch", "iteration", "grad_evals", "wall_seconds", "train_loss", "lr")


def component_columns(component) -> tuple[str, ...]:
    return tuple(getattr(component, "metric_columns", ()) or ())


def row_columns(task: Task, optimizer: torch.optim.Optimizer, policy: SyncPolicy, callbacks: list[Callback],
                context: RunContext) -> list[str]:
    """The metrics.csv header of a run built from these components; a column two of them declare is refused."""
    role_columns = [f"{column}_{role}" for role in context.role_names for column in ROLE_LEDGER_COLUMNS] \
        if len(context.role_names) > 1 else []
    groups = [("the trainer", BASE_COLUMNS), ("the optimizer", component_columns(optimizer)),
              ("the ledger", LEDGER_COLUMNS + tuple(role_columns)), ("the trainer", ("worker_spread",)),
              ("the sync policy", component_columns(policy)),
              *[(f"callback {type(cb).__name__}", component_columns(cb)) for cb in callbacks],
              ("the task", tuple(task.metric_columns)), ("the trainer", ("status",))]
    columns: list[str] = []
    owner: dict[str, str] = {}
    for who, names in groups:
        for name in names:
            if name in owner:
                raise UsageError(f"metrics column {name!r} is declared by both {owner[name]} and {who}")
            owner[name] = who
            columns.append(name)
    return columns


def _integral(value: float):
    return int(value) if math.isfinite(value) and value == int(value) else value


class EpochMetrics:
    """The metrics of one epoch end, computed by every rank alike (every rank takes part in its collectives)."""

    def __init__(self, task: Task, model: torch.nn.Module, optimizer: torch.optim.Optimizer, policy: SyncPolicy,
                 callbacks: list[Callback], context: RunContext, eval_sync: str = "copy"):
        self.task, self.model, self.optimizer, self.policy = task, model, optimizer, policy
        self.callbacks, self.context, self.eval_sync = callbacks, context, eval_sync
        self.columns = row_columns(task, optimizer, policy, callbacks, context)

    def row(self, loss_sum: float, samples: int, train_seconds: float, final: bool) -> tuple[dict, float]:
        """The row's measured values (the caller adds epoch, iteration and grad_evals) and the samples every rank
        drew this epoch. ``loss_sum`` / ``samples``: this rank's running training loss."""
        context = self.context
        mask = [bool(m) for m in self.policy.mask()]
        if len(mask) != context.world:
            raise ValueError(f"the sync policy's mask has {len(mask)} entries for {context.world} ranks")
        stats = optimizer_metrics(self.optimizer)
        names = sorted(stats)
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        own = [loss_sum, samples, 1.0 if finite else 0.0, train_seconds, *[stats[n] for n in names],
               *[1.0 if m else 0.0 for m in mask]]
        table = gather_rows(own, context)
        if any(table[r][-context.world:] != table[0][-context.world:] for r in range(context.world)):
            raise RuntimeError("the sync policy's mask differs between ranks: it must be the same list on every rank")
        counted = [r for r in range(context.world) if mask[r]]
        total_loss = sum(table[r][0] for r in counted)
        counted_samples = sum(table[r][1] for r in counted)
        train_loss = total_loss / max(counted_samples, 1)
        diverged = not math.isfinite(train_loss) or any(table[r][2] == 0.0 for r in counted)
        row = {"wall_seconds": round(max(t[3] for t in table), 3),  # the slowest rank's training time
               "train_loss": train_loss, "lr": self.optimizer.param_groups[0]["lr"],
               "status": "diverged" if diverged else ("done" if final else "")}
        for k, name in enumerate(names):
            row[name] = sum(table[r][4 + k] for r in counted) / max(len(counted), 1)

        splits = self.task.final_splits if final else self.task.eval_splits
        if not diverged:
            row["worker_spread"] = worker_spread(self.model, counted=mask[context.rank], context=context)
            if self.eval_sync == "in-place":
                self.policy.synchronize(self.model)  # the authors' evaluation: average the training models
            evaluated = self.policy.eval_model(self.model)
            # each rank's own model: only the counted ranks' scores; a common one: every rank scores its shard
            weight = 1.0 if self.policy.averages_for_evaluation or mask[context.rank] else 0.0

            def scored() -> dict:
                return evaluate(self.task, evaluated, splits, context.device, weight)

            for callback in self.callbacks:  # each callback wraps the scoring (NT-ASGD swaps its average in)
                scored = (lambda cb, inner: (lambda: cb.evaluate(evaluated, inner)))(callback, scored)
            row.update(scored())

        def score(model: torch.nn.Module) -> dict:
            """The task's metrics of ``model``, the same model on every rank (each scores its shard)."""
            return {} if diverged else evaluate(self.task, model, splits, context.device)

        row.update(self.policy.epoch_metrics(self.model, score))
        # after evaluation and the policy's metrics, which book their communication too
        row.update(self._ledger_columns(gather_rows(self.policy.ledger.values(), context)))
        return row, sum(t[1] for t in table)

    def _ledger_columns(self, ledgers: list[list[float]]) -> dict:
        """Each ledger column's mean over every rank; the wire bytes' mean over each role's ranks too."""
        context = self.context
        out = {column: _integral(sum(values[k] for values in ledgers) / context.world)
               for k, column in enumerate(LEDGER_COLUMNS)}
        if len(context.role_names) > 1:
            for role in context.role_names:
                ranks = context.ranks(role)
                for column in ROLE_LEDGER_COLUMNS:
                    k = LEDGER_COLUMNS.index(column)
                    out[f"{column}_{role}"] = _integral(sum(ledgers[r][k] for r in ranks) / len(ranks))
        return out


def gather_rows(values: list[float], context: RunContext) -> list[list[float]]:
    """Every rank's ``values`` (the same length on every rank), in rank order, on every rank: one all-reduce of a
    world x K float64 table in which each rank fills its own row (bookkeeping, not booked as communication). A
    non-finite value stays in its own cell."""
    if not context.distributed:
        return [[float(v) for v in values]]
    table = torch.zeros(context.world, len(values), dtype=torch.float64, device=context.device)
    table[context.rank] = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(table, group=context.world_group)
    return table.cpu().tolist()


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module, splits: tuple[str, ...], device, weight: float = 1.0) -> dict:
    """Metrics of ``model`` (the task scores its ``model`` attribute: the evaluated one is swapped in for the
    duration); each worker scores its shard of every split and the sums are reduced. ``weight`` 0: this rank's
    sums are left out (zeros sent, never its values)."""
    training_model = task.model
    task.model = model
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    try:
        for split in splits:
            sums = task.eval_sums(split).to(device=device, dtype=torch.float64)
            if not weight:
                sums = torch.zeros_like(sums)
            if dist.is_initialized():
                dist.all_reduce(sums)
            metrics.update(task.eval_metrics(split, sums.cpu()))
    finally:
        model.train(was_training)
        task.model = training_model
    return metrics


@torch.no_grad()
def worker_spread(model: torch.nn.Module, counted: bool = True, context: RunContext | None = None) -> float:
    """Largest difference of any parameter or float buffer (BatchNorm statistics) between two counted workers: 0
    when all hold the same model. Identical models (every-step, or right after an average) are recognized by a
    digest (16 bytes sent); otherwise one all-reduce of the model's size twice over, in its own precision: the
    largest and smallest values are exact in it, and only their difference is taken in float64. A worker that does
    not count (``counted=False``) sends -inf."""
    context = context or RunContext.current()
    if not context.distributed:
        return 0.0
    tensors = [t.detach() for t in float_state(model)]
    if same_on_every_worker(tensors, counted=counted):
        return 0.0
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
    extremes = torch.cat([flat, -flat]) if counted else torch.full((2 * flat.numel(),), -math.inf, dtype=dtype,
                                                                   device=flat.device)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX, group=context.world_group)  # [max, -min] in one round
    high, low = extremes[: flat.numel()].double(), -extremes[flat.numel():].double()
    return float((high - low).max())
