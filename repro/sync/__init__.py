"""Sync policies: how workers communicate. Each module of this package registers its policies.

A policy sees the model only through three hooks, called by the trainer:
``on_gradients(model)`` after every backward pass (inside the optimizer's closure),
``after_step(model)`` after every optimizer step, and ``synchronize(model)`` before evaluation, which
must leave every worker holding the model to evaluate. Each policy counts its own communication:
``comm_rounds`` (collective calls) and ``comm_bytes`` (payload bytes this worker contributes), cumulative.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist

from repro.registry import Registry, check_kwargs

SYNC_POLICIES: Registry[Callable[..., "SyncPolicy"]] = Registry("sync policy", package=__name__)


class SyncPolicy:
    def __init__(self):
        self.comm_rounds = 0
        self.comm_bytes = 0

    def on_gradients(self, model: torch.nn.Module) -> None:
        pass

    def after_step(self, model: torch.nn.Module) -> None:
        pass

    def synchronize(self, model: torch.nn.Module) -> None:
        pass

    def state_dict(self) -> dict:
        return {"comm_rounds": self.comm_rounds, "comm_bytes": self.comm_bytes}

    def load_state_dict(self, state: dict) -> None:
        self.comm_rounds, self.comm_bytes = state["comm_rounds"], state["comm_bytes"]

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


def broadcast_model(model: torch.nn.Module, src: int = 0) -> None:
    """Give every worker rank ``src``'s weights (the common starting point; not counted as training
    communication)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=src)


def parameters_with_grads(model: torch.nn.Module) -> Iterable[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]
