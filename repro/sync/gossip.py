"""Decentralized parallel SGD (D-PSGD, Lian et al. NeurIPS 2017): each worker mixes its model with its neighbours'
on a topology (repro/topology.py) instead of an all-reduce.

``order`` "lian": x_i <- sum_j W_ij x_j - lr * g_i(x_i), the gradient taken at the un-mixed model, so the exchange
of x(t) is posted before the step (``before_step``) and runs while the gradient is computed; the mix is added after
the step (x <- x + sum_j W_ij x_j(t) - x_i(t), which with plain SGD is the formula above and with any optimizer adds
the optimizer's move to the mixed model). ``order`` "atc" (adapt then combine): the local step, then the exchange and
the mix of the stepped models (blocking). With the complete topology, atc is every-step averaging of models.

The exchange is point-to-point on the policy's own process group ("gossip"), so it never interleaves with the
trainer's collectives on the default group. On gloo: an ``isend`` / ``irecv`` per neighbour (gloo's sends do not
wait for the receives, so no grouping is needed, and ``batch_isend_irecv`` is avoided there as issue 27 asks); on
NCCL: one ``batch_isend_irecv`` (a NCCL send waits for its receive, so two peers that both send first would wait for
each other; not tested here, there are not two GPUs). Bytes: each step a rank sends its model to each of its
``degree`` neighbours and receives theirs: ``degree x model bytes`` each way (payload: the model once).
Evaluation scores the average of the counted ranks' models (a copy); the epoch's ``consensus_distance`` is
sqrt(mean_i |x_i - x_mean|^2) over the counted ranks (bookkeeping: not booked as communication).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from repro import topology as topologies
from repro.context import RunContext
from repro.errors import UsageError
from repro.sync import SYNC_POLICIES, SyncPolicy, float_state

ORDERS = ("lian", "atc")


def flatten(model: torch.nn.Module) -> torch.Tensor:
    """The model's parameters and float buffers as one new flat tensor (what gossip exchanges)."""
    return torch.cat([t.detach().reshape(-1) for t in float_state(model)])


@torch.no_grad()
def load_flat(model: torch.nn.Module, flat: torch.Tensor) -> None:
    tensors = float_state(model)
    torch._foreach_copy_(tensors, [v.view_as(t) for v, t in zip(flat.split([t.numel() for t in tensors]), tensors)])


class Gossip(SyncPolicy):
    metric_columns = ("consensus_distance",)

    def __init__(self, topology: str, order: str, topology_options: dict, context: RunContext | None = None):
        super().__init__(context)
        if order not in ORDERS:
            raise UsageError(f"gossip order must be one of {', '.join(ORDERS)}, got {order!r}")
        topologies.validate(topology, self.context.world, **topology_options)
        self.topology, self.order, self.topology_options = topology, order, topology_options
        self.steps = 0
        self._group = None
        self._snapshot: torch.Tensor | None = None
        self._pending = None

    def wrap(self, model):
        if self.context.distributed:
            self._group = self.context.group("gossip")
        return model

    def row(self, step: int) -> torch.Tensor:
        return topologies.matrix(self.topology, self.context.world, step, **self.topology_options)[self.context.rank]

    def before_step(self, model):
        if self.order == "lian" and self.context.distributed:
            self._snapshot = flatten(model)
            self._pending = self._post(self._snapshot)

    def after_step(self, model):
        if self.context.distributed:
            if self.order == "lian":
                mixed = self._finish(self._pending, self._snapshot)
                load_flat(model, flatten(model).add_(mixed).sub_(self._snapshot))
                self._snapshot = self._pending = None
            else:
                stepped = flatten(model)
                load_flat(model, self._finish(self._post(stepped), stepped))
        self.steps += 1

    def _post(self, flat: torch.Tensor):
        """Send ``flat`` to every neighbour of this step and post the receipts of theirs (all asynchronous)."""
        row = self.row(self.steps)
        rank = self.context.rank
        neighbours = [(j, float(row[j])) for j in range(self.context.world) if j != rank and row[j] != 0]
        received = {j: torch.empty_like(flat) for j, _ in neighbours}
        if dist.get_backend(self._group) == "nccl":
            # NCCL runs each send as a kernel that waits for its receive: two peers that both send first would
            # wait for each other, so the exchange is posted as one group (gloo's sends do not wait)
            ops = [op for j, _ in neighbours for op in (dist.P2POp(dist.isend, flat, j, self._group),
                                                         dist.P2POp(dist.irecv, received[j], j, self._group))]
            works = dist.batch_isend_irecv(ops) if ops else []
        else:
            works = []
            for j, _ in neighbours:
                works.append(dist.isend(flat, dst=j, group=self._group))
                works.append(dist.irecv(received[j], src=j, group=self._group))
        size = flat.numel() * flat.element_size()
        self.book(size, len(neighbours) * size, len(neighbours) * size)
        return works, received, neighbours, float(row[rank])

    @staticmethod
    def _finish(pending, own: torch.Tensor) -> torch.Tensor:
        """sum_j W_ij x_j once every receipt is in."""
        works, received, neighbours, self_weight = pending
        for work in works:
            work.wait()
        mixed = own * self_weight
        for j, weight in neighbours:
            mixed.add_(received[j], alpha=weight)
        return mixed

    def synchronize(self, model):
        self._all_reduce_mean(float_state(model), mask=self.mask())

    def epoch_metrics(self, model, score):
        return {"consensus_distance": consensus_distance(model, self.mask(), self.context)}

    def state_dict(self):
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.steps = int(state["steps"])


@torch.no_grad()
def consensus_distance(model: torch.nn.Module, mask: list[bool], context: RunContext) -> float:
    """sqrt(mean over counted ranks of |x_i - x_mean|^2), x_mean their mean model (float64; two all-reduces)."""
    if not context.distributed:
        return 0.0
    counted = sum(bool(m) for m in mask)
    mine = bool(mask[context.rank])
    flat = flatten(model).double()
    total = flat.clone() if mine else torch.zeros_like(flat)  # all_reduce works in place
    dist.all_reduce(total, group=context.world_group)
    mean = total / counted
    square = ((flat - mean) ** 2).sum().reshape(1) if mine else torch.zeros(1, dtype=torch.float64, device=flat.device)
    dist.all_reduce(square, group=context.world_group)
    return float(square.sqrt() / counted ** 0.5)


@SYNC_POLICIES.register("gossip")
def gossip(topology: str = "ring", order: str = "lian", rows: int | None = None, cols: int | None = None,
           context: RunContext | None = None):
    """D-PSGD: mix models with the neighbours of a topology every step (see repro/sync/gossip.py)."""
    options = {k: v for k, v in (("rows", rows), ("cols", cols)) if v is not None}
    if options and topology != "torus":
        raise UsageError(f"gossip rows / cols shape a torus, not a {topology}")
    return Gossip(topology, order, options, context)
