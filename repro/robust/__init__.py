"""Robust aggregation rules: how a worker combines the n vectors it received (its own among them) when up to ``f``
of them may come from faulty workers. One file per rule; ``aggregate(name, vectors, f, own_index)`` on an (n, d)
tensor returns a d-vector.

Rules that need no reference point (median, trimmed mean, Krum, geometric median) ignore ``own_index``; NNA and
centered clipping start from the aggregating worker's own vector, as in the peer-to-peer setting of Farhadkhani et
al. (ICML 2023, LPD-EPFL/robust-collaborative-learning). ``max_faults(name, n)`` is the largest ``f`` a rule is
defined for (NNA and trimmed mean need f < n/2, Krum n > 2f + 2), checked before any worker starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from repro.errors import UsageError
from repro.registry import Registry, check_kwargs


@dataclass(frozen=True)
class Aggregator:
    """``rule(vectors, f, own_index, **opts)``; ``max_faults(n)``: the largest f it tolerates among n vectors."""
    rule: Callable[..., torch.Tensor]
    max_faults: Callable[[int], int]
    needs_own: bool = False  # whether the result depends on which worker aggregates


AGGREGATORS: Registry[Aggregator] = Registry("aggregator", package=__name__)


def register(name: str, max_faults: Callable[[int], int], needs_own: bool = False):
    def add(rule):
        AGGREGATORS.register(name, Aggregator(rule, max_faults, needs_own))
        return rule
    return add


def below_half(n: int) -> int:
    return (n - 1) // 2  # f < n/2


def any_count(n: int) -> int:
    return n  # plain averaging declares no bound: it is not robust to even one


def aggregate(name: str, vectors: torch.Tensor, f: int, own_index: int = 0, **opts) -> torch.Tensor:
    """Aggregate the rows of ``vectors`` (n, d) with rule ``name`` tolerating ``f`` faulty rows."""
    agg = AGGREGATORS.get(name)
    check_kwargs("aggregator", name, agg.rule, opts)
    if vectors.dim() != 2:
        raise UsageError(f"aggregate wants an (n, d) tensor of n vectors, got shape {tuple(vectors.shape)}")
    n = vectors.shape[0]
    validate(name, n, f)
    if not 0 <= own_index < n:
        raise UsageError(f"own_index must be in [0, {n}), got {own_index}")
    return agg.rule(vectors, f, own_index, **opts)


def validate(name: str, n: int, f: int, **opts) -> None:
    """One-line errors for a rule that cannot tolerate ``f`` of ``n`` (before any worker starts)."""
    agg = AGGREGATORS.get(name)
    check_kwargs("aggregator", name, agg.rule, opts)
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise UsageError(f"f (the faulty vectors an aggregator tolerates) must be an integer >= 0, got {f!r}")
    if f > agg.max_faults(n):
        raise UsageError(f"aggregator {name} tolerates at most f = {agg.max_faults(n)} of {n} workers, got f = {f}")


def pairwise_sq_distances(vectors: torch.Tensor) -> torch.Tensor:
    """(n, n) squared Euclidean distances, computed from differences (not the Gram trick) so that equal vectors
    are exactly 0 apart and ties break by index the same way on every worker."""
    diff = vectors[:, None, :] - vectors[None, :, :]
    return (diff * diff).sum(dim=-1)


def nearest(vectors: torch.Tensor, pivot: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k rows nearest ``pivot`` (stable: ties go to the lower index)."""
    distances = ((vectors - pivot) ** 2).sum(dim=1)
    return torch.sort(distances, stable=True).indices[:k]


__all__ = ["AGGREGATORS", "Aggregator", "aggregate", "validate", "register", "nearest", "pairwise_sq_distances"]
