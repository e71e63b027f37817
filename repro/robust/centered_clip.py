"""Centered clipping (Karimireddy et al. 2021): from a reference point v (the aggregating worker's own vector, as in
the authors' peer-to-peer code), v <- v + mean_i clip(x_i - v, tau), ``iterations`` times. The authors clip at
tau = 2 (``--gradient-clip-centered``) with one iteration."""
import torch

from repro.errors import UsageError
from repro.robust import below_half, register


@register("centered-clip", below_half, needs_own=True)
def centered_clip(vectors, f, own_index, tau: float = 2.0, iterations: int = 1):
    if not tau > 0:
        raise UsageError(f"centered-clip tau must be > 0, got {tau}")
    finite = torch.isfinite(vectors).all(dim=1)
    vectors = torch.where(finite[:, None], vectors, 0.0)
    v = vectors[own_index].clone()
    for _ in range(iterations):
        diff = vectors - v
        scale = torch.clamp(tau / diff.norm(dim=1).clamp_min(torch.finfo(diff.dtype).tiny), max=1.0)
        scale = torch.where(finite, scale, 0.0)  # a non-finite vector moves nothing (an infinitely far outlier)
        v = v + (diff * scale[:, None]).mean(dim=0)
    return v
