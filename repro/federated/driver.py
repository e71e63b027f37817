"""The federated driver: M clients on N worker processes, on the emulated event clock of a strategy.

The trainer's step (``repro.step.TrainStep``) runs each client's K local steps; this driver replaces the loop.
Time is emulated: the strategy's clock (repro/federated/strategies) decides which clients' updates each aggregation
takes and which server version each started from. A client's update depends only on that version, its data and its
seed (every local work reseeds torch from (run seed, client, version) and starts a fresh local optimizer, as the
authors' ``local_work`` builds a new one), so any process can compute it: local works are dealt round-robin over the
processes as soon as enough are in flight (see ``aggregate_next``), each process sums Σ d_i Δ_i over its own
contributors of an aggregation, one all-reduce adds the processes' sums,
and every process applies θ ← θ + η_g Σ d_i Δ_i to its copy of the server model. The server model is therefore the
same on every process (checked by the tests), and the result does not depend on N but for summation order.

Two byte ledgers, kept apart: ``process_bytes`` (what the process group really moved: the ring all-reduce of each
aggregation's sum) and ``emulated_bytes_down`` / ``emulated_bytes_up`` (client <-> server traffic of the emulated
system: each contribution downloads the model it started from and uploads its update, float32).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from repro.context import RunContext
from repro.errors import UsageError
from repro.federated.strategies import Aggregation, Strategy
from repro.sync import float_state, make as make_policy, ring_all_reduce_bytes, tensor_bytes
from repro.task import Batch, Task


def client_seed(seed: int, client: int, version: int) -> int:
    """The seed of client ``client``'s local work from server version ``version`` (63 bits of a hash: independent
    streams for every pair, the same on every process)."""
    digest = hashlib.sha256(f"repro-federated {seed} {client} {version}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def client_batches(task: Task, indices: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """Endless minibatches of a client: each a fresh random draw of ``batch_size`` of its samples without
    replacement (the authors' ``next(iter(shuffled loader))`` every step)."""
    while True:
        pick = torch.randperm(len(indices), generator=generator)[:batch_size]
        yield batch_of(task, indices[pick])


def batch_of(task: Task, indices: torch.Tensor) -> Batch:
    """The training batch of the samples ``indices``: the task's own ``batch_of`` where it has one, else an
    in-memory image task's (``train_x`` / ``train_y``, normalized and augmented as its own batches are)."""
    own = getattr(task, "batch_of", None)
    if own is not None:
        return own(indices)
    if not hasattr(task, "train_x"):
        raise UsageError(f"task {type(task).__name__} keeps no training set in memory: federated clients need one")
    idx = indices.to(task.train_y.device)
    return Batch((task.normalize(task.augment(task.train_x[idx])), task.train_y[idx]), samples=len(idx))


def training_labels(task: Task) -> torch.Tensor:
    labels = getattr(task, "train_y", None)
    if labels is None:
        raise UsageError(f"task {type(task).__name__} keeps no training labels in memory: federated clients need them")
    return labels.cpu()


@dataclass
class Totals:
    """What the driver counts (cumulative; in checkpoints)."""
    aggregations: int = 0
    contributions: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0
    local_steps: int = 0
    process_rounds: int = 0
    process_bytes: int = 0  # this process's wire bytes (sent; as many received) in the process group
    emulated_bytes_down: int = 0  # server -> clients
    emulated_bytes_up: int = 0  # clients -> server
    participation: list[int] = field(default_factory=list)


class FederatedDriver:
    """Runs ``strategy`` (bound to the clients' τ_i and p_i) over ``clients`` (one index tensor per client into the
    task's training set): K = ``local_steps`` steps of the optimizer ``make_optimizer(params)`` per local work on
    batches of ``batch_size``."""

    def __init__(self, task: Task, strategy: Strategy, clients: Sequence[torch.Tensor],
                 make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer], local_steps: int,
                 batch_size: int, seed: int = 0, context: RunContext | None = None):
        from repro.step import TrainStep

        self.context = context if context is not None else RunContext.current()
        if len(clients) != strategy.clients:
            raise UsageError(f"{len(clients)} client data shards for a strategy of {strategy.clients} clients")
        if self.context.world > len(clients):
            raise UsageError(f"{self.context.world} processes for {len(clients)} clients: use at most one process "
                             "per client")
        if local_steps < 1 or batch_size < 1:
            raise UsageError(f"local_steps and batch_size must be >= 1, got {local_steps} and {batch_size}")
        self.task, self.strategy, self.seed = task, strategy, int(seed)
        self.clients = [torch.as_tensor(c, dtype=torch.int64) for c in clients]
        self.local_steps, self.batch_size = int(local_steps), int(batch_size)
        self.model = task.model
        self.optimizer = make_optimizer(list(self.model.parameters()))
        self._batches: Iterator[Batch] | None = None
        self.step = TrainStep(task, self.optimizer, make_policy("none", context=self.context),
                              lambda: next(self._batches), device=self.context.device)
        self.server = [t.detach().clone() for t in float_state(self.model)]  # θ, the same on every process
        self.versions: dict[int, list[torch.Tensor]] = {0: self.server}  # the versions some client works from
        self.owner: dict[tuple[int, int], int] = {}  # (client, version) of a dealt work -> the process computing it
        self.ready: dict[tuple[int, int], list[torch.Tensor]] = {}  # this process's d_i Δ_i awaiting aggregation
        self.totals = Totals(participation=[0] * strategy.clients)

    # -- one local work -------------------------------------------------------------------------------------------
    def local_update(self, client: int, version: int) -> list[torch.Tensor]:
        """Δ_i = θ_i^received − θ_i^sent of ``client`` starting from server version ``version``."""
        start = self.versions[version]
        with torch.no_grad():
            torch._foreach_copy_(float_state(self.model), start)
        seed = client_seed(self.seed, client, version)
        torch.manual_seed(seed)  # dropout and any other draw of the local work
        self.optimizer.state.clear()  # a fresh local optimizer (momentum from zero), as the authors'
        generator = torch.Generator().manual_seed(seed)
        self._batches = client_batches(self.task, self.clients[client], self.batch_size, generator)
        self.model.train()
        for _ in range(self.local_steps):
            self.step(0)
        self.totals.local_steps += self.local_steps
        return [t.detach() - s for t, s in zip(float_state(self.model), start)]

    # -- one aggregation ----------------------------------------------------------------------------------------
    def _deal(self, works: list[tuple[int, int]]) -> None:
        """Compute ``works`` ((client, version) pairs, the same list on every process) dealt round-robin over the
        processes: each keeps d_i Δ_i of its own until the aggregation that takes it."""
        for k, work in enumerate(works):
            self.owner[work] = k % self.context.world
            if self.owner[work] == self.context.rank:
                client, version = work
                update = self.local_update(client, version)
                self.ready[work] = [self.strategy.weight(client) * t for t in update]

    def _in_flight(self) -> list[tuple[int, int]]:
        """Every client's current local work (client, the version it started from), not yet dealt, by version."""
        works = [(i, v) for i, v in enumerate(self.strategy.sent_versions) if (i, v) not in self.owner]
        return sorted(works, key=lambda w: (w[1], w[0]))

    def aggregate_next(self) -> Aggregation:
        """The next aggregation. Its contributors' works not dealt yet are dealt now; so are the other clients'
        works in flight whenever there are at least N of them (whole multiples of N), so the processes compute at
        once what FedAsync would otherwise compute one client at a time. Owners depend only on the clock's state
        (checkpointed with the kept updates), so a resumed run sums exactly as an uninterrupted one."""
        _, clients = self.strategy.peek()
        taken = [(i, self.strategy.sent_versions[i]) for i in clients]
        needed = [w for w in taken if w not in self.owner]
        ahead = [w for w in self._in_flight() if w not in needed]
        ahead = ahead[:len(ahead) - len(ahead) % self.context.world]
        self._deal(needed + ahead)
        event = self.strategy.select()
        mine = [self.ready.pop(w) for w in taken if self.owner[w] == self.context.rank]
        for w in taken:
            del self.owner[w]
        weighted = [torch.zeros_like(t) for t in self.server]
        for contribution in mine:  # ascending client order: the same sum on every run
            weighted = [a + b for a, b in zip(weighted, contribution)]
        if self.context.distributed and event.clients:
            flat = torch.cat([t.reshape(-1) for t in weighted])
            dist.all_reduce(flat, group=self.context.world_group)  # one reduction per aggregation
            weighted = [v.view_as(t) for v, t in zip(flat.split([t.numel() for t in weighted]), weighted)]
            self.totals.process_rounds += 1
            self.totals.process_bytes += ring_all_reduce_bytes(tensor_bytes([flat]), self.context.world,
                                                               self.context.rank)
        new = [t.clone() for t in self.server]
        if event.clients:
            self.strategy.aggregate(new, weighted)
        self.server = new
        self._keep_versions()
        self._count(event)
        return event

    def _keep_versions(self) -> None:
        """Keep the server versions a work not yet dealt starts from (the one just made included)."""
        current = self.strategy.aggregations
        self.versions[current] = self.server
        live = {v for i, v in enumerate(self.strategy.sent_versions) if (i, v) not in self.owner} | {current}
        self.versions = {v: t for v, t in self.versions.items() if v in live}

    def _count(self, event: Aggregation) -> None:
        t = self.totals
        t.aggregations += 1
        t.contributions += len(event.clients)
        model_bytes = tensor_bytes(self.server)
        for i, v in zip(event.clients, event.versions):
            staleness = event.index - v  # aggregations made while client i worked
            t.staleness_sum += staleness
            t.staleness_max = max(t.staleness_max, staleness)
            t.participation[i] += 1
            t.emulated_bytes_down += model_bytes
            t.emulated_bytes_up += model_bytes

    def run_until(self, horizon, on_aggregation: Callable[[Aggregation], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> None:
        """Aggregate up to emulated time ``horizon``; ``on_aggregation(event)`` after each (logging, checkpoints)."""
        horizon_time = Fraction(horizon) if isinstance(horizon, (int, Fraction)) else None
        from repro.federated.strategies import exact

        horizon_time = exact(horizon, "horizon") if horizon_time is None else horizon_time
        while self.strategy.peek()[0] <= horizon_time:
            event = self.aggregate_next()
            if on_aggregation is not None:
                on_aggregation(event)
            if should_stop is not None and should_stop():
                break

    # -- the server model ---------------------------------------------------------------------------------------
    def server_model(self) -> torch.nn.Module:
        """The model with the server's weights (the working model itself, loaded: score it, then keep training)."""
        with torch.no_grad():
            torch._foreach_copy_(float_state(self.model), self.server)
        return self.model

    @torch.no_grad()
    def federated_loss(self, p: Sequence[float] | None = None, chunk: int = 1000) -> float:
        """Σ_i p_i × the server model's mean training loss on client i's data (the paper's federated loss; p
        defaults to the strategy's). Every process scores every N-th client; one all-reduce."""
        p = self.strategy.p if p is None else np.asarray(p)
        model = self.server_model()
        model.eval()
        carried = self.task.state_dict()
        total = torch.zeros(1, dtype=torch.float64, device=self.context.device)  # NCCL reduces device tensors
        for i in range(self.context.rank, len(self.clients), self.context.world):
            loss_sum, count = 0.0, 0
            for start in range(0, len(self.clients[i]), chunk):
                batch = batch_of(self.task, self.clients[i][start:start + chunk])
                _, data_loss = self.task.training_loss(batch)
                loss_sum += float(data_loss) * batch.samples
                count += batch.samples
            total += float(p[i]) * loss_sum / max(count, 1)
        self.task.load_state_dict(carried)
        if self.context.distributed:
            dist.all_reduce(total, group=self.context.world_group)
        model.train()
        return float(total)

    def metrics(self) -> dict:
        """The columns a log row takes from the driver."""
        t = self.totals
        return {"emulated_time": float(self.strategy.time), "aggregations": t.aggregations,
                "contributions": t.contributions,
                "staleness_mean": t.staleness_sum / t.contributions if t.contributions else 0.0,
                "staleness_max": t.staleness_max, "participation_min": min(t.participation),
                "participation_max": max(t.participation), "process_bytes": t.process_bytes,
                "emulated_bytes_down": t.emulated_bytes_down, "emulated_bytes_up": t.emulated_bytes_up}

    # -- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Tensors on the CPU (rank 0 may gather every rank's state: another rank's device index is not its own)."""
        def saved(ts):
            return [t.detach().cpu().clone() for t in ts]

        return {"strategy": self.strategy.state_dict(), "server": saved(self.server),
                "versions": {v: saved(ts) for v, ts in self.versions.items()},
                "owner": [[i, v, r] for (i, v), r in self.owner.items()],
                "ready": [[i, v, saved(ts)] for (i, v), ts in self.ready.items()],
                "totals": dict(vars(self.totals), participation=list(self.totals.participation))}

    def load_state_dict(self, state: dict) -> None:
        # a checkpoint is read onto the CPU: the models go back to the device the clients train on
        def here(ts):
            return [t.to(self.context.device, copy=True) for t in ts]

        self.strategy.load_state_dict(state["strategy"])
        self.server = here(state["server"])
        self.versions = {int(v): here(ts) for v, ts in state["versions"].items()}
        self.owner = {(int(i), int(v)): int(r) for i, v, r in state["owner"]}
        self.ready = {(int(i), int(v)): here(ts) for i, v, ts in state["ready"]}
        self.totals = Totals(**{**state["totals"], "participation": list(state["totals"]["participation"])})
        self.server_model()
