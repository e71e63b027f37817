"""Data splits over workers: ``split(name, labels, n, seed, **opts)`` returns one list of sample indices per worker,
reproducible from ``seed`` (a CPU generator of its own: nothing else's random state is read or moved).

``iid``: a random permutation cut into n equal shards (the remainder left out, as the tasks' per-epoch shards do).
``dirichlet``: for every class, the shares of its samples over the n workers ~ Dirichlet(alpha, ..., alpha)
(Hsu et al. 2019's non-iid split, as FedML/FedLab cut it: disjoint, the whole set used); drawn again until every
worker holds at least ``min_size`` samples (``attempts`` draws at most). Small alpha: each worker sees few classes;
large alpha: close to iid. ``classes``: each worker gets ``k`` classes (worker i the classes i*k, i*k+1, ... mod C, so
every class is used when n*k >= C) and an equal share of each of its classes' samples.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from repro.errors import UsageError
from repro.registry import Registry, check_kwargs

# A builder's keyword arguments are the partition's options (the component table reads them); it checks them and
# returns the cut: (labels, n, generator) -> one index list per worker.
Cut = Callable[[torch.Tensor, int, torch.Generator], list[list[int]]]
PARTITIONS: Registry[Callable[..., Cut]] = Registry("partition")


def split(name: str, labels: Sequence[int] | torch.Tensor, n: int, seed: int, **opts) -> list[list[int]]:
    """One index list per worker (sorted), from the samples' ``labels``."""
    cut = validate(name, **opts)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"a partition needs n >= 1 workers, got {n!r}")
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).cpu()
    generator = torch.Generator().manual_seed(int(seed))
    return [sorted(part) for part in cut(labels, n, generator)]


def validate(name: str, **opts) -> Cut:
    """The name and option checks ``split`` makes (before any worker starts); returns the cut."""
    builder = PARTITIONS.get(name)
    check_kwargs("partition", name, builder, opts)
    return builder(**opts)


def _check_options(name: str, opts: dict) -> None:
    alpha = opts.get("alpha")
    if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0 and math.isfinite(alpha)):
        raise UsageError(f"partition {name}: alpha must be a finite number > 0, got {alpha!r}")
    for key in ("min_size", "k", "attempts"):
        value = opts.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= (0 if key == "min_size" else 1)):
            raise UsageError(f"partition {name}: {key} must be an integer >= {0 if key == 'min_size' else 1}, got {value!r}")


@PARTITIONS.register("iid")
def iid() -> Cut:
    return _iid


def _iid(labels: torch.Tensor, n: int, generator: torch.Generator) -> list[list[int]]:
    per_worker = len(labels) // n
    if per_worker == 0:
        raise UsageError(f"partition iid: {len(labels)} samples cannot give each of {n} workers one")
    perm = torch.randperm(len(labels), generator=generator)
    return [perm[i * per_worker:(i + 1) * per_worker].tolist() for i in range(n)]


@PARTITIONS.register("dirichlet")
def dirichlet(alpha: float = 1.0, min_size: int = 10, attempts: int = 1000) -> Cut:
    _check_options("dirichlet", {"alpha": alpha, "min_size": min_size, "attempts": attempts})
    return lambda labels, n, generator: _dirichlet(labels, n, generator, float(alpha), min_size, attempts)


def _dirichlet(labels: torch.Tensor, n: int, generator: torch.Generator, alpha: float, min_size: int,
               attempts: int) -> list[list[int]]:
    if min_size * n > len(labels):
        raise UsageError(f"partition dirichlet: {len(labels)} samples cannot give {n} workers min_size={min_size} each")
    by_class = [torch.nonzero(labels == c).flatten() for c in labels.unique().tolist()]
    gamma_one = torch.full((n,), float(alpha), dtype=torch.float64)
    for _ in range(attempts):
        parts: list[list[int]] = [[] for _ in range(n)]
        for members in by_class:
            members = members[torch.randperm(len(members), generator=generator)]
            shares = _dirichlet_draw(gamma_one, generator)
            cuts = (torch.cumsum(shares, 0) * len(members)).round().long().clamp(max=len(members))
            cuts[-1] = len(members)
            start = 0
            for worker, end in enumerate(cuts.tolist()):
                parts[worker].extend(members[start:end].tolist())
                start = end
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise UsageError(f"partition dirichlet: no draw in {attempts} gave every one of {n} workers {min_size} samples "
                     f"(alpha={alpha}); lower min_size or raise alpha")


def _dirichlet_draw(concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One Dirichlet sample from ``generator`` (torch.distributions cannot take a generator): normalised Gamma
    draws, each Gamma(a) by Marsaglia-Tsang (boosted by U^(1/a) for a < 1)."""
    draws = torch.tensor([_gamma(float(a), generator) for a in concentration], dtype=torch.float64)
    total = draws.sum()
    if total <= 0:  # every draw underflowed (tiny alpha): all to one worker, chosen from the generator
        draws = torch.zeros_like(draws)
        draws[int(torch.randint(len(draws), (1,), generator=generator))] = 1.0
        total = draws.sum()
    return draws / total


def _gamma(a: float, generator: torch.Generator) -> float:
    def uniform() -> float:
        return float(torch.rand((), generator=generator, dtype=torch.float64))

    if a < 1.0:
        return _gamma(a + 1.0, generator) * uniform() ** (1.0 / a)
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = float(torch.randn((), generator=generator, dtype=torch.float64))
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        u = uniform()
        if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


@PARTITIONS.register("classes")
def classes(k: int = 2) -> Cut:
    _check_options("classes", {"k": k})
    return lambda labels, n, generator: _classes(labels, n, generator, k)


def _classes(labels: torch.Tensor, n: int, generator: torch.Generator, k: int) -> list[list[int]]:
    names = labels.unique().tolist()
    if k > len(names):
        raise UsageError(f"partition classes: k={k} is more than the {len(names)} classes")
    holders: dict[int, list[int]] = {c: [] for c in names}
    for worker in range(n):
        for j in range(k):
            holders[names[(worker * k + j) % len(names)]].append(worker)
    parts: list[list[int]] = [[] for _ in range(n)]
    for c, workers in holders.items():
        if not workers:
            continue
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        share = len(members) // len(workers)
        for i, worker in enumerate(workers):
            parts[worker].extend(members[i * share:(i + 1) * share].tolist())
    return parts


__all__ = ["PARTITIONS", "split", "validate"]
