"""Optimizers by name: ``repro.optim.make(name, params, **hparams)`` returns a torch optimizer.

Each module of this package registers its optimizers on import, so a new algorithm is one new file.
Optimizers may declare ``scaled_hparams``: the param-group keys a learning-rate schedule (or the
language-model tasks' sequence-length rescaling) multiplies. Default: ``("lr",)``.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from repro.errors import UsageError
from repro.registry import Registry, check_kwargs

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", package=__name__)

# Hyperparameters that must be finite and >= 0 whenever an optimizer takes them.
_NON_NEGATIVE = ("lr", "momentum", "weight_decay", "clip", "smoothness", "alpha", "eps")


def make(name: str, params: Iterable, **hparams) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params``; unknown names or hyperparameters raise UsageError."""
    builder = OPTIMIZERS.get(name)
    check_kwargs("optimizer", name, builder, hparams)
    for key in _NON_NEGATIVE:
        value = hparams.get(key)
        if value is not None and not (float(value) >= 0.0 and float(value) != float("inf")):
            raise UsageError(f"{key} must be a finite number >= 0, got {value}")
    return builder(params, **hparams)


def accepted_hparams(name: str) -> set[str]:
    """The keyword arguments optimizer ``name`` takes (used to filter preset defaults)."""
    import inspect

    return set(inspect.signature(OPTIMIZERS.get(name)).parameters) - {"params"}


def scaled_hparams(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    return tuple(getattr(optimizer, "scaled_hparams", ("lr",)))


def optimizer_metrics(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Per-optimizer statistics since the last call (e.g. the fraction of clipped steps)."""
    pop = getattr(optimizer, "pop_metrics", None)
    return pop() if pop else {}


__all__ = ["OPTIMIZERS", "make", "accepted_hparams", "scaled_hparams", "optimizer_metrics", "UsageError"]
