"""Krum and multi-Krum (Blanchard et al. 2017): score each vector by the summed squared distances to its
n - f - 2 nearest others; Krum returns the best-scored vector, multi-Krum the mean of the m best (default n - f)."""
import torch

from repro.errors import UsageError
from repro.robust import pairwise_sq_distances, register


def krum_bound(n: int) -> int:
    return max(0, (n - 3) // 2)  # n > 2f + 2


def krum_scores(vectors: torch.Tensor, f: int) -> torch.Tensor:
    n = vectors.shape[0]
    distances = pairwise_sq_distances(vectors)
    distances.fill_diagonal_(float("inf"))
    closest = max(1, n - f - 2)
    return distances.sort(dim=1).values[:, :closest].sum(dim=1)


@register("krum", krum_bound)
def krum(vectors, f, own_index):
    return vectors[torch.sort(krum_scores(vectors, f), stable=True).indices[0]].clone()


@register("multi-krum", krum_bound)
def multi_krum(vectors, f, own_index, m: int | None = None):
    n = vectors.shape[0]
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise UsageError(f"multi-krum m must be in [1, {n}], got {m}")
    return vectors[torch.sort(krum_scores(vectors, f), stable=True).indices[:m]].mean(dim=0)
