"""Sync policies: how workers communicate. Each module of this package registers its policies.

The policy interface (every hook optional; the trainer's step calls them, and nothing else touches the model):

- builder: ``@SYNC_POLICIES.register("name")`` on a function whose keyword arguments are the policy's settings;
  one that also takes ``context`` receives the run's ``RunContext`` (repro/context.py: rank, world, roles, groups,
  device, seed). Builders also run in the launcher to validate settings (``context.planning``): they check values
  and never communicate. Process groups a policy owns are made in ``wrap()`` (``context.group(name, ranks)``).
- ``wrap(model)`` once, before training: the module the task's forward runs through while training (default: the
  model; ``every-step``: a DistributedDataParallel wrapper whose backward all-reduces gradients in buckets). Every
  other hook, the optimizer, checkpoints and evaluation get the model itself.
- ``before_step(model)`` before each optimizer step (e.g. post a neighbour exchange that overlaps the step),
  ``on_gradients(model)`` after every backward pass (inside the optimizer's closure), ``after_step(model)`` after
  every optimizer step.
- ``eval_model(model)`` before evaluation: the model to score (default: the mean of the counted ranks' models in a
  separate copy, so training is not disturbed; ``averages_for_evaluation = False``: each rank scores its own, and
  the masked ranks' scores are left out). ``synchronize(model)``: average the training models in place (used before
  evaluation only when a recipe says the authors did so).
- Bytes: every communication is booked in ``self.ledger`` (a ``Ledger``): rounds, the payload this rank contributes
  (``comm_bytes``, the unit the results have always used), and the bytes it sends and receives on the wire, in the
  "train" account or, inside ``with self.booking("eval")``, the evaluation's. ``count(tensors)`` books one
  all-reduce with the ring model (each rank sends and receives 2(N-1)/N x the payload); a policy that exchanges
  otherwise books ``self.book(payload, sent, received)`` itself (gossip: degree x the model each way; a parameter
  server: the workers' uploads are the server's receipts). The trainer reduces every rank's ledger: the columns are
  means over ranks, and per role when the run has several roles (``bytes_sent_server``, ...).
- Masks: ``mask()`` -> one bool per rank, the same on every rank: which ranks count in the epoch's metrics (training
  loss, finiteness, worker spread, optimizer statistics, evaluation). Default: every rank whose role is not
  ``faulty``. Masking changes what is reported, never what is trained.
- Metrics: ``metric_columns`` names the columns the policy reports; ``epoch_metrics(model, score)`` returns them at
  every epoch end (all ranks call it; it may communicate). ``score(m)`` evaluates a model that is the same on every
  rank on the task's splits (every rank scores its shard), e.g. worker 0's model broadcast into a copy.
- ``state_dict()`` / ``load_state_dict()``: the ledger plus the policy's own state (checkpoints).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from repro.context import FAULTY_ROLE, RunContext, call_with_context
from repro.errors import UsageError
from repro.registry import Registry, check_kwargs

SYNC_POLICIES: Registry[Callable[..., "SyncPolicy"]] = Registry("sync policy", package=__name__)

# The ledger's columns, in metrics.csv order: the first four are the columns every run has written (payload bytes);
# the wire bytes are new columns beside them.
LEDGER_COLUMNS = ("comm_rounds", "comm_bytes", "eval_comm_rounds", "eval_comm_bytes",
                  "bytes_sent", "bytes_received", "eval_bytes_sent", "eval_bytes_received")
ROLE_LEDGER_COLUMNS = ("bytes_sent", "bytes_received")  # reported per role (bytes_sent_<role>) when roles differ


@dataclass
class Account:
    """Cumulative communication of one rank in one account."""
    rounds: int = 0  # collective calls or exchanges
    payload: int = 0  # bytes of the tensors this rank contributed (an all-reduce's input)
    sent: int = 0  # bytes this rank put on the wire
    received: int = 0  # bytes that reached this rank

    def book(self, payload: int, sent: int, received: int, rounds: int = 1) -> None:
        self.rounds += int(rounds)
        self.payload += int(payload)
        self.sent += int(sent)
        self.received += int(received)


class Ledger:
    """One rank's communication: the algorithm's ("train") and evaluation's ("eval") accounts."""

    def __init__(self):
        self.train, self.eval = Account(), Account()

    def account(self, name: str) -> Account:
        if name not in ("train", "eval"):
            raise ValueError(f"no ledger account {name!r} (train, eval)")
        return getattr(self, name)

    def values(self) -> list[int]:
        """The numbers behind LEDGER_COLUMNS, in that order."""
        t, e = self.train, self.eval
        return [t.rounds, t.payload, e.rounds, e.payload, t.sent, t.received, e.sent, e.received]

    def state_dict(self) -> dict:
        return dict(zip(LEDGER_COLUMNS, self.values()))

    def load_state_dict(self, state: dict, world: int = 1, rank: int = 0) -> None:
        """From a state_dict; a checkpoint written before wire bytes were booked has only the payload counters
        (all-reduces only then): its wire bytes are the ring model of its payload."""
        t, e = self.train, self.eval
        t.rounds, t.payload = int(state["comm_rounds"]), int(state["comm_bytes"])
        e.rounds, e.payload = int(state.get("eval_comm_rounds", 0)), int(state.get("eval_comm_bytes", 0))
        for account, prefix in ((t, ""), (e, "eval_")):
            estimate = ring_all_reduce_bytes(account.payload, world, rank)
            account.sent = int(state.get(f"{prefix}bytes_sent", estimate))
            account.received = int(state.get(f"{prefix}bytes_received", estimate))


def ring_all_reduce_bytes(payload: int, world: int, rank: int) -> int:
    """Bytes rank ``rank`` sends (and as many receives) in a ring all-reduce of ``payload`` bytes over ``world``
    ranks: the payload in ``world`` chunks, each rank sends every chunk but its own twice (reduce-scatter, then
    all-gather). Summed over ranks: 2(N-1) x payload, so the mean is 2(N-1)/N x payload, the bandwidth-optimal
    all-reduce's cost (what NCCL's ring and gloo's ring algorithms send)."""
    if world <= 1 or payload <= 0:
        return 0
    own = payload // world + (1 if rank < payload % world else 0)
    return 2 * (payload - own)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class SyncPolicy:
    averages_for_evaluation = True  # False: each worker scores its own model (metrics: over the counted ranks)
    metric_columns: tuple[str, ...] = ()  # columns epoch_metrics() reports

    def __init__(self, context: RunContext | None = None):
        self.context = context if context is not None else RunContext.current()
        self.ledger = Ledger()
        self._booking = self.ledger.train
        self._eval_copy: torch.nn.Module | None = None

    # -- hooks --------------------------------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def before_step(self, model: torch.nn.Module) -> None:
        pass

    def on_gradients(self, model: torch.nn.Module) -> None:
        pass

    def after_step(self, model: torch.nn.Module) -> None:
        pass

    def synchronize(self, model: torch.nn.Module) -> None:
        pass

    def mask(self) -> list[bool]:
        """Which ranks count in the epoch's metrics (the same list on every rank)."""
        return [role != FAULTY_ROLE for role in self.context.roles]

    def epoch_metrics(self, model: torch.nn.Module, score: Callable[[torch.nn.Module], dict]) -> dict:
        """The values of ``metric_columns`` at an epoch end (every rank calls it)."""
        return {}

    @torch.no_grad()
    def eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The mean of the counted ranks' ``model`` in a copy kept for evaluation (one flattened all-reduce, booked
        as evaluation communication); the training model and the policy's schedule stay as they are."""
        if not self.averages_for_evaluation or not self.context.distributed:
            return model
        source = float_state(model)
        if self._eval_copy is None or [t.shape for t in float_state(self._eval_copy)] != [t.shape for t in source]:
            import copy

            self._eval_copy = copy.deepcopy(model)  # made once, reused by every later evaluation
            for p in self._eval_copy.parameters():
                p.grad = None  # the copy is only scored
        target = self._eval_copy
        torch._foreach_copy_(float_state(target), [t.detach() for t in source])
        with self.booking("eval"):
            self._all_reduce_mean(self._eval_tensors(target), mask=self.mask())
        # Integer buffers (BatchNorm's num_batches_tracked) are equal on all workers: copy them too.
        for t_buf, s_buf in zip(target.buffers(), model.buffers()):
            if not t_buf.is_floating_point():
                t_buf.copy_(s_buf)
        return target

    def _eval_tensors(self, model: torch.nn.Module) -> list[torch.Tensor]:
        """What evaluation needs averaged (parameters and float buffers; see float_state)."""
        return float_state(model)

    # -- the ledger ---------------------------------------------------------------------------------------------
    # The counters every policy has had, read from the ledger (book() and count() write it).
    comm_rounds = property(lambda self: self.ledger.train.rounds)
    comm_bytes = property(lambda self: self.ledger.train.payload)
    eval_comm_rounds = property(lambda self: self.ledger.eval.rounds)
    eval_comm_bytes = property(lambda self: self.ledger.eval.payload)

    @contextmanager
    def booking(self, account: str):
        """Book the communication inside the block in ``account`` ("train" or "eval")."""
        previous, self._booking = self._booking, self.ledger.account(account)
        try:
            yield
        finally:
            self._booking = previous

    def book(self, payload: int, sent: int, received: int, rounds: int = 1) -> None:
        """Book communication of this rank: ``payload`` bytes of its tensors, ``sent`` / ``received`` on the wire."""
        self._booking.book(payload, sent, received, rounds)

    def count(self, tensors: list[torch.Tensor]) -> None:
        """Book one all-reduce whose payload is ``tensors`` (the ring model for the wire bytes)."""
        payload = tensor_bytes(tensors)
        wire = ring_all_reduce_bytes(payload, self.context.world, self.context.rank)
        self.book(payload, wire, wire)

    def state_dict(self) -> dict:
        return self.ledger.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ledger.load_state_dict(state, self.context.world, self.context.rank)

    # -- shared helpers -----------------------------------------------------------------------------------------
    def _all_reduce_mean(self, tensors: list[torch.Tensor], mask: list[bool] | None = None) -> None:
        """Average ``tensors`` in place across workers with one flattened all-reduce, and book it. ``mask``: the
        mean of the counted ranks' tensors (a rank left out sends zeros, never its values: NaN times 0 is NaN)."""
        context = self.context
        if not tensors or not context.distributed:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        if mask is None or all(mask):
            flat /= context.world
        elif mask[context.rank]:
            flat /= sum(bool(m) for m in mask)
        else:
            flat.zero_()
        dist.all_reduce(flat, group=context.world_group)
        with torch.no_grad():
            torch._foreach_copy_(tensors, [v.view_as(t) for v, t in zip(flat.split([t.numel() for t in tensors]), tensors)])
        self.count(tensors)


def float_state(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and floating-point buffers (BatchNorm statistics): everything model averaging averages.
    Integer buffers (``num_batches_tracked``) advance identically on every worker and are left alone."""
    return list(model.parameters()) + float_buffers(model)


def float_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


def make(name: str, context: RunContext | None = None, faults=None, **options) -> SyncPolicy:
    """Build policy ``name`` (a builder that takes ``context`` gets ``context``; torch's default group's when
    None). ``faults``: the run's faulty workers (``repro.byzantine.FaultModel``), given to a builder that takes
    ``faults`` (a policy whose exchange they act in); None: no faulty worker."""
    builder = SYNC_POLICIES.get(name)
    check_kwargs("sync policy", name, builder, options)
    if faults is not None:
        import inspect

        if "faults" not in inspect.signature(builder).parameters:
            raise UsageError(f"faulty workers act in the exchange of a robust sync policy; --sync {name} has none "
                             "(use --sync robust; --sync-opt aggregator=mean shows plain averaging under faults)")
        options = {**options, "faults": faults}
    return call_with_context(builder, context, **options)


def broadcast_model(model: torch.nn.Module, src: int = 0) -> bool:
    """Give every worker rank ``src``'s weights (the common starting point; not counted as training
    communication). Workers that built the model from one seed hold them already: a digest of every parameter and
    buffer is compared first (one 16-byte all-reduce) and the broadcast, seconds of a slow link for a large model,
    is made only when some worker differs. Returns whether it was made."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return False
    tensors = list(model.parameters()) + list(model.buffers())
    if not tensors or same_on_every_worker(tensors):
        return False
    for t in tensors:
        dist.broadcast(t.data, src=src)
    return True


_LEFT_OUT = -(1 << 60)  # a rank that does not count in same_on_every_worker: below every digest


def same_on_every_worker(tensors: list[torch.Tensor], counted: bool = True) -> bool:
    """Whether every counted worker holds these tensors bit for bit (a SHA-256 digest of each worker's, compared in
    one 16-byte all-reduce): a collective, every worker takes part; one that does not count (``counted=False``)
    sends a value below every digest."""
    import hashlib

    mine = _LEFT_OUT
    if counted:
        digest = hashlib.sha256()
        for t in tensors:  # the bytes, shape and type of each tensor in order: equal digests mean equal weights
            digest.update(f"{tuple(t.shape)} {t.dtype};".encode())
            digest.update(t.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy())
        mine = int.from_bytes(digest.digest()[:7], "little")  # 56 bits: exact in an int64
    extremes = torch.tensor([mine, _LEFT_OUT if not counted else -mine], dtype=torch.int64, device=tensors[0].device)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)  # [max, -min] over the counted: all equal when both are mine
    high, neg_low = extremes.tolist()
    return high == -neg_low


def parameters_with_grads(model: torch.nn.Module) -> Iterable[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]
