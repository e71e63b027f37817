"""Geometric median by smoothed Weiszfeld iterations (Pillutla et al., RFA, 2022): the point minimising the sum of
Euclidean distances, each distance floored at ``nu`` so that a vector on the iterate does not divide by zero.
Started from the coordinate-wise median (not the mean: one 1e30 sender would put the mean where every distance
overflows) and computed in float64; a non-finite vector weighs nothing."""
import torch

from repro.robust import below_half, register


@register("geometric-median", below_half)
def geometric_median(vectors, f, own_index, iterations: int = 100, nu: float = 1e-6, tolerance: float = 1e-7):
    finite = torch.isfinite(vectors).all(dim=1)
    points = torch.where(finite[:, None], vectors, 0.0).double()
    kept = points[finite] if finite.any() else points
    z = kept.sort(dim=0).values[(len(kept) - 1) // 2]
    for _ in range(iterations):
        weights = 1.0 / torch.clamp((points - z).norm(dim=1), min=nu)
        weights = torch.where(finite, weights, 0.0)
        new = (weights[:, None] * points).sum(dim=0) / weights.sum()
        moved = float((new - z).norm())
        z = new
        if moved <= tolerance * max(1.0, float(z.norm())):
            break
    return z.to(vectors.dtype)
