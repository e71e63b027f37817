"""Gaussian noise: each faulty worker sends the honest mean plus N(0, sigma^2 I), drawn on the CPU from ``seed`` so
every rank draws the same vectors (the sync policy mixes the run's seed and the step into it)."""
import torch

from repro.errors import UsageError
from repro.byzantine import register


@register("noise")
def noise(sigma: float = 1.0, seed: int = 0):
    if not (isinstance(sigma, (int, float)) and sigma >= 0):
        raise UsageError(f"noise sigma must be a number >= 0, got {sigma!r}")

    def forge(honest, f):
        generator = torch.Generator().manual_seed(int(seed))
        draws = torch.randn(f, honest.shape[1], generator=generator, dtype=honest.dtype)
        return honest.mean(dim=0) + float(sigma) * draws.to(honest.device)
    return forge
