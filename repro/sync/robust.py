"""Robust collaborative learning (Farhadkhani et al., ICML 2023): after each local step every worker receives every
other worker's model and replaces its own by a robust aggregate of the n models (``aggregator``, tolerating ``f``
faulty ones). With the ``monna`` optimizer (EMA momentum and its half step) and ``aggregator`` nna this is MoNNA
(`--algo monna`); with ``mean`` it is D-SGD on the complete graph.

Faulty workers (the ``byzantine`` component: behaviour and ``count``, the last ranks) take part in the exchange like
the others; what they send is then forged identically on every rank from the honest rows of the exchange
(``repro.byzantine``: omniscient, deterministic, no extra message). A faulty rank's model becomes its forged row
(it is masked out of every metric). ``crash`` freezes (the faulty ranks stop stepping and resend their last model)
or drops (their rows leave the aggregate) from ``at_step``; ``label-flip`` sends the models trained on flipped
labels as they are. The exchange is one all-gather on the policy's own process group ("robust"): each rank sends
its model to the n - 1 others and receives theirs, (n - 1) x model bytes each way (payload: the model once).

Metrics: ``consensus_distance`` over the honest ranks, and the authors' score, worker 0's model
(``worker0_test_loss``, ``worker0_test_acc``; the default evaluation scores the honest ranks' average model).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from repro import byzantine, robust as rules
from repro.context import RunContext
from repro.errors import UsageError
from repro.sync import SYNC_POLICIES, SyncPolicy, float_state
from repro.sync.gossip import consensus_distance, flatten, load_flat


class RobustAggregation(SyncPolicy):
    metric_columns = ("consensus_distance", "worker0_test_loss", "worker0_test_acc")

    def __init__(self, aggregator: str, f: int, aggregator_options: dict, context: RunContext | None = None,
                 faults: byzantine.FaultModel | None = None):
        super().__init__(context)
        rules.validate(aggregator, self.context.world, f, **aggregator_options)
        self.aggregator, self.f, self.aggregator_options = aggregator, f, aggregator_options
        self.faults = faults
        if faults and faults.name == "crash" and faults.options.get("mode", "drop") == "drop":
            rules.validate(aggregator, self.context.world - len(faults.ranks), f, **aggregator_options)
        self.faulty = set(faults.ranks) if faults else set()
        self.steps = 0
        self._group = None
        self._frozen: torch.Tensor | None = None  # a crashed faulty rank's last model

    def wrap(self, model):
        if self.context.distributed:
            self._group = self.context.group("robust")
        return model

    def _crash_option(self, key: str, default):
        return self.faults.options.get(key, default) if self.faults and self.faults.name == "crash" else None

    def crashed(self) -> bool:
        at = self._crash_option("at_step", 0)
        return at is not None and self.steps >= at

    def before_step(self, model):
        # a crashed faulty worker stops stepping: keep the model it had when it crashed
        if self.context.rank in self.faulty and self.crashed() and self._frozen is None:
            self._frozen = flatten(model)

    @torch.no_grad()
    def after_step(self, model):
        if not self.context.distributed:
            self.steps += 1
            return
        rank, world = self.context.rank, self.context.world
        if self._frozen is not None:
            load_flat(model, self._frozen)
        own = flatten(model)
        table = torch.empty(world, own.numel(), dtype=own.dtype, device=own.device)
        dist.all_gather(list(table.unbind(0)), own, group=self._group)
        size = own.numel() * own.element_size()
        self.book(size, (world - 1) * size, (world - 1) * size)
        rows = self.exchanged_rows(table)
        if rank in self.faulty and self.faults.behaviour.acts_on != "labels":
            if rank in rows:
                load_flat(model, rows[rank])  # what it sent (a forged vector, or its frozen model)
        else:  # honest, or a label flipper that follows the protocol on flipped labels
            order = list(rows)
            load_flat(model, rules.aggregate(self.aggregator, torch.stack([rows[r] for r in order]), self.f,
                                             order.index(rank), **self.aggregator_options))
        self.steps += 1

    def exchanged_rows(self, table: torch.Tensor) -> dict[int, torch.Tensor]:
        """rank -> the vector it counts as having sent this step, after the faulty rows are forged (the same on
        every rank). Dropped crashed ranks are absent."""
        honest = [r for r in range(table.shape[0]) if r not in self.faulty]
        rows = {r: table[r] for r in range(table.shape[0])}
        if not self.faulty:
            return rows
        acts_on = self.faults.behaviour.acts_on
        if acts_on == "vectors":
            forged = self.faults.forge(table[honest], self.steps, self.context.seed, self.aggregator, self.f)
            for r, vector in zip(self.faults.ranks, forged):
                rows[r] = vector
        elif acts_on == "exchange" and self.crashed() and self._crash_option("mode", "drop") == "drop":
            for r in self.faulty:
                del rows[r]
        return rows

    def synchronize(self, model):
        self._all_reduce_mean(float_state(model), mask=self.mask())

    def epoch_metrics(self, model, score):
        row = {"consensus_distance": consensus_distance(model, self.mask(), self.context)}
        worker0 = self._worker0_copy(model)
        scores = score(worker0)
        row["worker0_test_loss"] = scores.get("test_loss", math.nan)
        row["worker0_test_acc"] = scores.get("test_acc", math.nan)
        return row

    @torch.no_grad()
    def _worker0_copy(self, model):
        """Worker 0's model on every rank, in a copy (a broadcast: bookkeeping of the authors' score, booked as
        evaluation)."""
        if not self.context.distributed:
            return model
        import copy

        if getattr(self, "_worker0", None) is None:
            self._worker0 = copy.deepcopy(model)
        flat = flatten(model)
        with self.booking("eval"):
            dist.broadcast(flat, src=0, group=self._group)
            size = flat.numel() * flat.element_size()
            self.book(size, size * (self.context.world - 1) if self.context.rank == 0 else 0,
                      0 if self.context.rank == 0 else size)
        load_flat(self._worker0, flat)
        for target, source in zip(self._worker0.buffers(), model.buffers()):
            if not target.is_floating_point():
                target.copy_(source)
        return self._worker0

    def state_dict(self):
        state = {**super().state_dict(), "steps": self.steps}
        if self._frozen is not None:
            state["frozen"] = self._frozen
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.steps = int(state["steps"])
        frozen = state.get("frozen")  # read onto the CPU: back to the model's device
        self._frozen = None if frozen is None else frozen.to(self.context.device)


@SYNC_POLICIES.register("robust")
def robust(aggregator: str = "nna", f: int = 0, tau: float | None = None, m: int | None = None,
           context: RunContext | None = None, faults: byzantine.FaultModel | None = None):
    """Exchange models with every worker after each local step and keep a robust aggregate (``aggregator``
    tolerating ``f``); ``tau``: centered-clip's radius, ``m``: multi-krum's count."""
    options = {k: v for k, v in (("tau", tau), ("m", m)) if v is not None}
    if not isinstance(f, int) or isinstance(f, bool):
        raise UsageError(f"robust f must be an integer, got {f!r}")
    return RobustAggregation(aggregator, f, options, context, faults)
