"""Opt-in histograms of gradient and update magnitudes (the AdamW paper's scale-freeness figures).

At the chosen epochs, every optimizer step adds |g| (the gradient the optimizer was given) and |dx| (the
parameter change the step made, weight decay included) of every parameter entry, all layers pooled, to
histograms over log10 magnitude. ``save`` writes ``stats.npz``: ``epochs`` (1-based), ``edges`` (log10 bin
edges; values outside are counted in the first / last bin), ``grad_counts`` and ``update_counts``
(epochs x bins), ``grad_zeros`` and ``update_zeros`` (exact zeros, which have no logarithm), ``steps``.
"""
from __future__ import annotations

from pathlib import Path

import torch

LOG10_MIN, LOG10_MAX, BINS_PER_DECADE = -20.0, 4.0, 4


class MagnitudeStats:
    def __init__(self, epochs: list[int]):
        self.epochs = sorted(set(int(e) for e in epochs))
        self.bins = int((LOG10_MAX - LOG10_MIN) * BINS_PER_DECADE)
        n = len(self.epochs)
        self.grad = torch.zeros(n, self.bins, dtype=torch.float64)
        self.update = torch.zeros(n, self.bins, dtype=torch.float64)
        self.zeros = torch.zeros(n, 2, dtype=torch.float64)
        self.steps = torch.zeros(n, dtype=torch.int64)
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
            hist[row] += torch.histc(logs, bins=self.bins, min=LOG10_MIN, max=LOG10_MAX).cpu()
        self.steps[row] += 1

    def save(self, path: Path) -> None:
        import numpy as np

        np.savez(path, epochs=np.array(self.epochs), edges=np.linspace(LOG10_MIN, LOG10_MAX, self.bins + 1),
                 grad_counts=self.grad.numpy(), update_counts=self.update.numpy(),
                 grad_zeros=self.zeros[:, 0].numpy(), update_zeros=self.zeros[:, 1].numpy(), steps=self.steps.numpy())
