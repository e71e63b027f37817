"""Communication topologies of decentralized training: each gives the mixing matrix W (n x n, symmetric, doubly
stochastic) gossip multiplies the workers' models by, and each rank's peers with their weights.

``matrix(name, n, step=0, **opts)`` is the whole matrix; ``peers(name, n, rank, step=0, **opts)`` one row's
off-diagonal entries (who a rank exchanges with and how much it weighs each) and ``self_weight`` its diagonal.
Weights are Metropolis-Hastings on the undirected graph (W_ij = 1 / (1 + max(deg i, deg j)) on an edge, the rest
on the diagonal): on a regular graph every neighbour and the rank itself weigh 1 / (degree + 1), so a ring is 1/3 on
self and each neighbour and a torus 1/5, as epfml/ChocoSGD builds them.

Names: ``ring``, ``torus`` (``rows`` x ``cols``; N must factor, default the most square factors with both >= 2),
``exponential`` (static: i ~ i +- 2^k), ``one-peer-exponential`` (time-varying: at step t one exponent
k = t mod ceil(log2 n)), ``complete`` (1/n everywhere: every-step averaging of models).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from repro.errors import UsageError
from repro.registry import Registry, check_kwargs

# name -> builder(n, step, **opts) -> (neighbour sets of the undirected graph) or a ready matrix
TOPOLOGIES: Registry[Callable[..., torch.Tensor]] = Registry("topology")


def matrix(name: str, n: int, step: int = 0, **opts) -> torch.Tensor:
    """The n x n mixing matrix (float64) of topology ``name`` at ``step`` (only time-varying ones depend on it)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"a topology needs n >= 1 workers, got {n!r}")
    if not isinstance(step, int) or step < 0:
        raise UsageError(f"step must be an integer >= 0, got {step!r}")
    builder = TOPOLOGIES.get(name)
    check_kwargs("topology", name, builder, opts)
    return builder(n, step, **opts)


def validate(name: str, n: int, **opts) -> None:
    """What ``matrix`` refuses (unknown name or option, a torus N that does not factor), before any worker starts."""
    matrix(name, n, 0, **opts)


def peers(name: str, n: int, rank: int, step: int = 0, **opts) -> list[tuple[int, float]]:
    """Rank ``rank``'s neighbours at ``step`` with the weight it gives each (its row of W off the diagonal), in
    rank order."""
    row = matrix(name, n, step, **opts)[rank]
    return [(j, float(row[j])) for j in range(n) if j != rank and row[j] != 0]


def self_weight(name: str, n: int, rank: int, step: int = 0, **opts) -> float:
    return float(matrix(name, n, step, **opts)[rank, rank])


def period(name: str, n: int, **opts) -> int:
    """After how many steps the sequence of matrices repeats (1 for a static topology)."""
    return _one_peer_rounds(n) if name == "one-peer-exponential" else 1


def metropolis(neighbours: list[set[int]]) -> torch.Tensor:
    """Metropolis-Hastings weights of an undirected graph: symmetric and doubly stochastic by construction."""
    n = len(neighbours)
    w = torch.zeros(n, n, dtype=torch.float64)
    for i, adjacent in enumerate(neighbours):
        for j in adjacent:
            w[i, j] = 1.0 / (1 + max(len(adjacent), len(neighbours[j])))
    w += torch.diag(1.0 - w.sum(dim=1))
    return w


def _undirected(n: int, offsets) -> list[set[int]]:
    """Each i linked to i + o and i - o (mod n) for every offset, self-loops dropped."""
    return [{(i + s * o) % n for o in offsets for s in (1, -1)} - {i} for i in range(n)]


@TOPOLOGIES.register("ring")
def ring(n: int, step: int) -> torch.Tensor:
    return metropolis(_undirected(n, [1]))


@TOPOLOGIES.register("torus")
def torus(n: int, step: int, rows: int | None = None, cols: int | None = None) -> torch.Tensor:
    rows, cols = torus_shape(n, rows, cols)
    def index(r, c):
        return (r % rows) * cols + (c % cols)
    neighbours = [{index(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))} - {index(r, c)}
                  for r in range(rows) for c in range(cols)]
    return metropolis(neighbours)


def torus_shape(n: int, rows: int | None = None, cols: int | None = None) -> tuple[int, int]:
    """rows x cols = n: the given ones (checked), else the most square factors with both at least 2."""
    if rows is None and cols is None:
        fitting = [r for r in range(2, math.isqrt(n) + 1) if n % r == 0]
        if not fitting:
            raise UsageError(f"a torus needs a number of workers that factors into rows x cols >= 2 x 2, got {n}"
                             " (use --sync-opt topology=ring or exponential)")
        rows = fitting[-1]
        return rows, n // rows
    if rows is None:
        rows = n // cols if cols and n % cols == 0 else 0
    if cols is None:
        cols = n // rows if rows and n % rows == 0 else 0
    if not (isinstance(rows, int) and isinstance(cols, int) and rows >= 1 and cols >= 1 and rows * cols == n):
        raise UsageError(f"torus rows x cols must equal the {n} workers, got rows={rows} cols={cols}")
    return rows, cols


@TOPOLOGIES.register("exponential")
def exponential(n: int, step: int) -> torch.Tensor:
    # Assran et al.'s exponential graph made undirected (symmetric W): i ~ i +- 2^k for 2^k < n.
    return metropolis(_undirected(n, [2 ** k for k in range(max(1, (n - 1).bit_length()))]))


def _one_peer_rounds(n: int) -> int:
    return max(1, (n - 1).bit_length())  # ceil(log2 n)


@TOPOLOGIES.register("one-peer-exponential")
def one_peer_exponential(n: int, step: int) -> torch.Tensor:
    """At step t, exponent k = t mod ceil(log2 n). For n a power of two each rank pairs with rank XOR 2^k (one
    peer, W = (I + P)/2 symmetric; after log2 n steps every model is the exact average, Ying et al. 2021).
    Otherwise the symmetrised one-peer graph: 1/2 on self, 1/4 on i + 2^k and i - 2^k."""
    if n == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    k = step % _one_peer_rounds(n)
    hop = 2 ** k
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        if n & (n - 1) == 0:
            w[i, i ^ hop] += 0.5
        else:
            w[i, (i + hop) % n] += 0.25
            w[i, (i - hop) % n] += 0.25
        w[i, i] += 0.5
    return w


@TOPOLOGIES.register("complete")
def complete(n: int, step: int) -> torch.Tensor:
    return torch.full((n, n), 1.0 / n, dtype=torch.float64)


def spectral_gap(w: torch.Tensor) -> float:
    """1 - |second largest eigenvalue| of a symmetric W: how fast gossip mixes (1 for complete)."""
    eig = torch.linalg.eigvalsh(w).abs().sort(descending=True).values
    return float(1.0 - eig[1]) if len(eig) > 1 else 1.0


__all__ = ["TOPOLOGIES", "matrix", "peers", "self_weight", "validate", "period", "metropolis", "spectral_gap",
           "torus_shape"]
