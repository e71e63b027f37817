"""Opt-in histograms of gradient and update magnitudes (the AdamW paper's scale-freeness figures).

At the chosen epochs, every optimizer step adds |g| (the gradient the optimizer was given) and |dx| (the
parameter change the step made, weight decay included) of every parameter entry, all layers pooled, to
histograms over log10 magnitude. ``save`` writes ``stats.npz``: ``epochs`` (1-based), ``edges`` (log10 bin
edges; values outside are counted in the first / last bin), ``grad_counts`` and ``update_counts``
(epochs x bins), ``grad_zeros`` and ``update_zeros`` (exact zeros, which have no logarithm), ``steps``.

Also the authors' view (zhenxun-zhuang/AdamW-Scale-free: `train.py` stores the first iteration of each epoch at
their `--store-stats-interval 1000`, `utils/draw_histogram.py` bins it): the first step of each chosen epoch only,
bins floor(log2 |v|) with |v| clamped to [1e-8, 1e4], so zeros and tinier values fall in the lowest bin:
``first_step_grad_counts``, ``first_step_update_counts`` over ``first_step_log2_bins`` (the integer exponents
-27 .. 13). docs/fidelity.md lists what still differs from theirs.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

LOG10_MIN, LOG10_MAX, BINS_PER_DECADE = -20.0, 4.0, 4
CLAMP_MIN, CLAMP_MAX = 1e-8, 1e4  # draw_histogram.py: --min-bin-value, --max-bin-value (bin base 2)
LOG2_BINS = torch.arange(math.floor(math.log2(CLAMP_MIN)), math.floor(math.log2(CLAMP_MAX)) + 1)  # -27 .. 13


def log2_counts(values: torch.Tensor) -> torch.Tensor:
    """The authors' bucketize: counts of floor(log2 clamp(|v|, 1e-8, 1e4)) per exponent in LOG2_BINS."""
    exponents = values.abs().double().clamp(CLAMP_MIN, CLAMP_MAX).log2().floor().long() - int(LOG2_BINS[0])
    return torch.bincount(exponents, minlength=len(LOG2_BINS)).double().cpu()


class MagnitudeStats:
    def __init__(self, epochs: list[int]):
        self.epochs = sorted(set(int(e) for e in epochs))
        self.bins = int((LOG10_MAX - LOG10_MIN) * BINS_PER_DECADE)
        n = len(self.epochs)
        self.grad = torch.zeros(n, self.bins, dtype=torch.float64)
        self.update = torch.zeros(n, self.bins, dtype=torch.float64)
        self.zeros = torch.zeros(n, 2, dtype=torch.float64)
        self.steps = torch.zeros(n, dtype=torch.int64)
        self.first_grad = torch.zeros(n, len(LOG2_BINS), dtype=torch.float64)
        self.first_update = torch.zeros(n, len(LOG2_BINS), dtype=torch.float64)
        self._before: list[torch.Tensor] | None = None

    def wants(self, epoch: int) -> bool:
        """``epoch`` counts from 0 in the trainer, from 1 for the user."""
        return epoch + 1 in self.epochs

    def before_step(self, model: torch.nn.Module) -> None:
        self._before = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, epoch: int) -> None:
        row = self.epochs.index(epoch + 1)
        params = list(model.parameters())
        grads = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]) if params else torch.zeros(0)
        updates = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(params, self._before)])
        self._before = None
        for values, hist, col in ((grads, self.grad, 0), (updates, self.update, 1)):
            mags = values.abs().double()
            nonzero = mags[mags > 0]
            self.zeros[row, col] += float(mags.numel() - nonzero.numel())
            logs = nonzero.log10().clamp(LOG10_MIN, LOG10_MAX - 1e-9)
            # on the CPU: CUDA's histc has no deterministic kernel (it raises under --deterministic)
            hist[row] += torch.histc(logs.cpu(), bins=self.bins, min=LOG10_MIN, max=LOG10_MAX)
        if self.steps[row] == 0:  # the epoch's first step: the authors' sample
            self.first_grad[row] += log2_counts(grads)
            self.first_update[row] += log2_counts(updates)
        self.steps[row] += 1

    def save(self, path: Path) -> None:
        import numpy as np

        np.savez(path, epochs=np.array(self.epochs), edges=np.linspace(LOG10_MIN, LOG10_MAX, self.bins + 1),
                 grad_counts=self.grad.numpy(), update_counts=self.update.numpy(),
                 grad_zeros=self.zeros[:, 0].numpy(), update_zeros=self.zeros[:, 1].numpy(), steps=self.steps.numpy(),
                 first_step_log2_bins=LOG2_BINS.numpy(), first_step_grad_counts=self.first_grad.numpy(),
                 first_step_update_counts=self.first_update.numpy())
