"""MoNNA's local step (Farhadkhani et al., "Robust Collaborative Learning with Linear Gradient Overhead", ICML 2023):
an exponential moving average of the gradients and a step along it,

    m <- beta * m + (1 - beta) * g        (m_0 = 0; the authors' momentum = dampening = 0.99)
    x <- x - lr * m                       (the "half step"; the sync policy then mixes the models with NNA)

This is not torch's ``SGD(momentum=beta, dampening=beta)``: torch initialises the buffer with the first gradient
undampened (m_1 = g_1), MoNNA's first step moves by (1 - beta) * g_1 (the authors' buffer starts at zero).
``weight_decay`` adds weight_decay * x to g (the authors add an l2 term of 1e-4 to the loss, the same gradient).
"""
from __future__ import annotations

import torch

from repro.errors import UsageError
from repro.optim import OPTIMIZERS, run_closure


class EMAMomentumSGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.5, beta: float = 0.99, weight_decay: float = 0.0):
        if not 0.0 <= float(beta) < 1.0:
            raise UsageError(f"beta must be in [0, 1), got {beta}")
        super().__init__(params, dict(lr=lr, beta=float(beta), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group in self.param_groups:
            beta, lr, decay = group["beta"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=decay) if decay else p.grad
                state = self.state[p]
                if not state:
                    state["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["momentum"]
                m.mul_(beta).add_(grad, alpha=1.0 - beta)
                p.add_(m, alpha=-lr)
        return loss


@OPTIMIZERS.register("monna")
def monna(params, lr: float = 0.5, beta: float = 0.99, weight_decay: float = 0.0):
    """EMA momentum (MoNNA's worker step); pair with ``--sync robust`` (aggregator nna) as ``--algo monna``."""
    return EMAMomentumSGD(params, lr=lr, beta=beta, weight_decay=weight_decay)
