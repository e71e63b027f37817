"""Gaussian noise: each faulty worker sends the honest mean plus N(0, sigma^2 I), drawn on the CPU from ``seed`` so
every rank draws the same vectors (the policy passes a seed that changes every step)."""
import torch

from repro.errors import UsageError
from repro.byzantine import register


@register("noise")
def noise(honest, f, sigma: float = 1.0, seed: int = 0):
    if not sigma >= 0:
        raise UsageError(f"noise sigma must be >= 0, got {sigma}")
    generator = torch.Generator().manual_seed(int(seed))
    draws = torch.randn(f, honest.shape[1], generator=generator, dtype=honest.dtype)
    return honest.mean(dim=0) + sigma * draws.to(honest.device)
