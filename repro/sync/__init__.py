"""Sync policies: how workers communicate. Each module of this package registers its policies.

A policy sees the model only through its hooks, called by the trainer:
``wrap(model)`` once, before training: the module the task's forward runs through while training (default: the model
itself; ``every-step`` returns a DistributedDataParallel wrapper, whose backward all-reduces gradients in buckets);
every other hook, the optimizer, checkpoints and evaluation get the model itself. ``on_gradients(model)`` after every backward pass (inside the optimizer's closure),
``after_step(model)`` after every optimizer step, ``eval_model(model)`` before evaluation (the model to score:
by default the workers' average computed into a separate copy, so training is not disturbed) and
``synchronize(model)`` (average the training models in place: used before evaluation only when a recipe says the
authors did so). Each policy counts its own communication, cumulative: ``comm_rounds`` (collective calls) and
``comm_bytes`` (payload bytes this worker contributes) for the algorithm, ``eval_comm_rounds`` /
``eval_comm_bytes`` for what evaluation needed.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist

from repro.registry import Registry, check_kwargs

SYNC_POLICIES: Registry[Callable[..., "SyncPolicy"]] = Registry("sync policy", package=__name__)


class SyncPolicy:
    averages_for_evaluation = True  # False: each worker scores its own model (metrics: the workers' mean)

    def __init__(self):
        self.comm_rounds = 0
        self.comm_bytes = 0
        self.eval_comm_rounds = 0
        self.eval_comm_bytes = 0
        self._eval_copy: torch.nn.Module | None = None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def on_gradients(self, model: torch.nn.Module) -> None:
        pass

    def after_step(self, model: torch.nn.Module) -> None:
        pass

    def synchronize(self, model: torch.nn.Module) -> None:
        pass

    @torch.no_grad()
    def eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The workers' average of ``model`` in a copy kept for evaluation (one flattened all-reduce, counted as
        evaluation communication); the training model and the policy's schedule stay as they are."""
        if not self.averages_for_evaluation or not dist.is_initialized() or dist.get_world_size() == 1:
            return model
        source = float_state(model)
        if self._eval_copy is None or [t.shape for t in float_state(self._eval_copy)] != [t.shape for t in source]:
            import copy

            self._eval_copy = copy.deepcopy(model)  # made once, reused by every later evaluation
            for p in self._eval_copy.parameters():
                p.grad = None  # the copy is only scored
        target = self._eval_copy
        torch._foreach_copy_(float_state(target), [t.detach() for t in source])
        rounds, volume = self.comm_rounds, self.comm_bytes
        self._all_reduce_mean(self._eval_tensors(target))
        self.eval_comm_rounds += self.comm_rounds - rounds  # booked apart from the algorithm's
        self.eval_comm_bytes += self.comm_bytes - volume
        self.comm_rounds, self.comm_bytes = rounds, volume
        # Integer buffers (BatchNorm's num_batches_tracked) are equal on all workers: copy them too.
        for t_buf, s_buf in zip(target.buffers(), model.buffers()):
            if not t_buf.is_floating_point():
                t_buf.copy_(s_buf)
        return target

    def _eval_tensors(self, model: torch.nn.Module) -> list[torch.Tensor]:
        """What evaluation needs averaged (parameters and float buffers; see float_state)."""
        return float_state(model)

    def state_dict(self) -> dict:
        return {"comm_rounds": self.comm_rounds, "comm_bytes": self.comm_bytes,
                "eval_comm_rounds": self.eval_comm_rounds, "eval_comm_bytes": self.eval_comm_bytes}

    def load_state_dict(self, state: dict) -> None:
        self.comm_rounds, self.comm_bytes = state["comm_rounds"], state["comm_bytes"]
        self.eval_comm_rounds = state.get("eval_comm_rounds", 0)
        self.eval_comm_bytes = state.get("eval_comm_bytes", 0)

    # Shared helpers -------------------------------------------------------------------------------
    def _all_reduce_mean(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place across workers with one flattened all-reduce, and count it."""
        if not tensors or not dist.is_initialized() or dist.get_world_size() == 1:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        flat /= dist.get_world_size()
        dist.all_reduce(flat)
        with torch.no_grad():
            torch._foreach_copy_(tensors, [v.view_as(t) for v, t in zip(flat.split([t.numel() for t in tensors]), tensors)])
        self.count(tensors)

    def count(self, tensors: list[torch.Tensor]) -> None:
        """Book one collective whose payload is ``tensors``."""
        self.comm_rounds += 1
        self.comm_bytes += sum(t.numel() * t.element_size() for t in tensors)


def float_state(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and floating-point buffers (BatchNorm statistics): everything model averaging averages.
    Integer buffers (``num_batches_tracked``) advance identically on every worker and are left alone."""
    return list(model.parameters()) + float_buffers(model)


def float_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


def make(name: str, **options) -> SyncPolicy:
    builder = SYNC_POLICIES.get(name)
    check_kwargs("sync policy", name, builder, options)
    return builder(**options)


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


def same_on_every_worker(tensors: list[torch.Tensor]) -> bool:
    """Whether every worker holds these tensors bit for bit (a SHA-256 digest of each worker's, compared in one
    16-byte all-reduce): a collective, every worker takes part."""
    import hashlib

    digest = hashlib.sha256()
    for t in tensors:  # the bytes, shape and type of each tensor in order: equal digests mean equal weights
        digest.update(f"{tuple(t.shape)} {t.dtype};".encode())
        digest.update(t.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy())
    mine = int.from_bytes(digest.digest()[:7], "little")  # 56 bits: exact in an int64
    extremes = torch.tensor([mine, -mine], dtype=torch.int64, device=tensors[0].device)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)  # [max, -min]: all equal when both are mine
    return extremes.tolist() == [mine, -mine]


def parameters_with_grads(model: torch.nn.Module) -> Iterable[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]
