"""Optimizers by name: ``repro.optim.make(name, params, **hparams)`` returns a torch optimizer.

Each module of this package registers its optimizers on import, so a new algorithm is one new file.
Optimizers may declare ``scaled_hparams``: the param-group keys a learning-rate schedule (or the
language-model tasks' sequence-length rescaling) multiplies. Default: ``("lr",)``.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from repro.errors import UsageError
from repro.registry import Registry, builder_defaults, check_kwargs

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", package=__name__)

# Hyperparameters that must be finite and >= 0 whenever an optimizer takes them.
_NON_NEGATIVE = ("lr", "momentum", "weight_decay", "clip", "smoothness", "alpha", "eps")


def make(name: str, params: Iterable, context=None, **hparams) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params``; unknown names or hyperparameters raise UsageError. A builder that
    takes ``context`` gets the run's ``RunContext`` (repro/context.py)."""
    from repro.context import call_with_context

    builder = _checked_builder(name, hparams)
    return call_with_context(builder, context, params, **hparams)


def validate(name: str, **hparams) -> None:
    """What ``make`` checks, without building the optimizer: the names, the non-negative values, and the
    optimizer's own value checks, which torch's optimizers and ours make before they read their parameters (the
    constructor is stopped there). Building over a real parameter would import torch._dynamo (torch wraps
    ``Optimizer.add_param_group`` to keep it out of compiled graphs): about 1.9 s and 150 MB in a launcher that
    never takes a step. A value the optimizer rejects is a UsageError."""
    builder = _checked_builder(name, hparams)
    try:
        builder(_ParametersNotRead(), **hparams)
    except _ParametersReached:
        return
    except ValueError as e:
        raise UsageError(f"optimizer {name}: {e}") from None


class _ParametersReached(Exception):
    pass


class _ParametersNotRead:
    """Stands in for the parameters: reading them ends the constructor, after its value checks."""

    def __iter__(self):
        raise _ParametersReached


def _checked_builder(name: str, hparams: dict) -> Callable[..., torch.optim.Optimizer]:
    builder = OPTIMIZERS.get(name)
    check_kwargs("optimizer", name, builder, hparams)
    for key in _NON_NEGATIVE:
        value = hparams.get(key)
        if value is not None and not (float(value) >= 0.0 and float(value) != float("inf")):
            raise UsageError(f"{key} must be a finite number >= 0, got {value}")
    return builder


def accepted_hparams(name: str) -> set[str]:
    """The keyword arguments optimizer ``name`` takes (used to filter preset defaults)."""
    return set(builder_defaults(OPTIMIZERS.get(name)))


def param_groups(model: torch.nn.Module, mode: str = "all") -> list[dict]:
    """The parameters an optimizer gets. ``no-decay-bias-norm``: biases and normalization-layer parameters (every
    parameter of at most one dimension) form a second group with weight decay 0, as many ImageNet recipes do."""
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "all":
        return [{"params": params}]
    if mode != "no-decay-bias-norm":
        raise UsageError(f"unknown param-groups mode {mode!r} (known: all, no-decay-bias-norm)")
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "no_decay": True}]


def run_closure(closure) -> torch.Tensor | None:
    """torch's optimizer convention: inside a no-grad ``step``, the closure (forward and backward of a fresh
    minibatch) runs with gradients enabled. It runs first: it may set this step's lr (the trainer does)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def gradients_per_step(name: str) -> int:
    """How many gradients optimizer ``name`` evaluates per step (its builder's ``gradients_per_step``, default 1):
    known without building it, so the launcher can refuse a pairing that needs one (a parameter server)."""
    return int(getattr(OPTIMIZERS.get(name), "gradients_per_step", 1))


def scaled_hparams(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    return tuple(getattr(optimizer, "scaled_hparams", ("lr",)))


def optimizer_metrics(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Per-optimizer statistics since the last call (e.g. the fraction of clipped steps)."""
    pop = getattr(optimizer, "pop_metrics", None)
    return pop() if pop else {}


__all__ = ["OPTIMIZERS", "make", "gradients_per_step", "param_groups", "run_closure", "accepted_hparams", "scaled_hparams", "optimizer_metrics", "UsageError"]
