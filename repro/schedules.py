"""Step-size schedules as epoch -> multiplier functions; the trainer multiplies every hyperparameter the
optimizer lists in ``scaled_hparams`` (lr; lr and the clipping threshold for clipped SGD)."""
from __future__ import annotations

import math
from typing import Callable

from repro.errors import UsageError
from repro.registry import Registry, check_kwargs

SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("schedule")


@SCHEDULES.register("constant")
def constant(epochs: int):
    return lambda epoch: 1.0


@SCHEDULES.register("step")
def step(epochs: int, milestones: tuple[int, ...] = (), gamma: float = 0.1):
    """Multiply by ``gamma`` at each milestone epoch (CELGC's CIFAR runs: /10 at epochs 80 and 120)."""
    return lambda epoch: gamma ** sum(epoch >= m for m in milestones)


@SCHEDULES.register("cosine")
def cosine(epochs: int):
    return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))


@SCHEDULES.register("hyperbolic")
def hyperbolic(epochs: int, half_life: float = 1.0):
    """lr_0 / (1 + epoch / half_life): the MoNNA authors' lr / (steps / decay + 1), updated every ``decay`` steps
    (peerToPeer.py: --learning-rate-decay 50 --learning-rate-decay-delta 50), when an epoch is ``decay`` steps."""
    if not float(half_life) > 0:
        raise UsageError(f"schedule hyperbolic: half_life must be > 0, got {half_life}")
    return lambda epoch: 1.0 / (1.0 + epoch / float(half_life))


def make(name: str, epochs: int, **options) -> Callable[[int], float]:
    builder = SCHEDULES.get(name)
    check_kwargs("schedule", name, builder, options)
    return builder(epochs, **options)
