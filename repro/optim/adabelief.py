"""AdaBelief (Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients",
NeurIPS 2020), Algorithm 1, at step t with gradient g:

    m_t = beta1 * m + (1 - beta1) * g
    s_t = beta2 * s + (1 - beta2) * (g - m_t)^2 + eps
    x  <- x - lr * (m_t / (1 - beta1^t)) / (sqrt(s_t / (1 - beta2^t)) + eps)

The ``+ eps`` inside s_t is kept in the state (it accumulates), as in the paper and in the authors'
adabelief-pytorch. Default eps = 1e-16, adabelief-pytorch's default since 0.1.0: eps here plays the role of
Adam's eps squared; the authors suggest 1e-8 where SGD beats Adam (CNNs on images). adabelief-pytorch >= 0.1
also rectifies by default (RAdam-style, ``rectify=True``); that variant is not implemented: this is Algorithm 1,
their ``rectify=False``.

Weight decay ``lambda`` (``weight_decay``), applied to params whose group has a non-zero ``weight_decay``:

* ``decoupled=True``: x <- x * (1 - lambda * lr_t / lr_0) before the step, the project's AdamW convention
  (adam_family.py; ``lr_0`` = ``group["initial_lr"]``). adabelief-pytorch's ``weight_decouple`` multiplies by
  ``1 - lr_t * wd`` instead: the same update with wd = lambda / lr_0.
* ``decoupled=False``: g <- g + lambda * x before the moments (l2 regularization).
"""
from __future__ import annotations

import torch

from repro.errors import UsageError
from repro.optim import OPTIMIZERS, run_closure


class AdaBelief(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-16, weight_decay: float = 0.0,
                 decoupled: bool = True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled))
        for group in self.param_groups:  # lr_0 of the decoupled decay, unless a scheduler has set it already
            group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group in self.param_groups:
            (beta1, beta2), eps, lr, lam = group["betas"], group["eps"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if lam and group["decoupled"]:
                    if group["initial_lr"] > 0:  # lr_0 = 0 never moves x, decayed or not
                        p.mul_(1.0 - lam * lr / group["initial_lr"])
                elif lam:
                    grad = grad.add(p, alpha=lam)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m, s = state["step"], state["exp_avg"], state["exp_avg_var"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                residual = grad - m
                s.mul_(beta2).addcmul_(residual, residual, value=1.0 - beta2).add_(eps)
                denom = (s / (1.0 - beta2 ** t)).sqrt_().add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1.0 - beta1 ** t))
        return loss


@OPTIMIZERS.register("adabelief")
def adabelief(params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-16,
              weight_decay: float = 0.0, decoupled: bool = True):
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= float(value) < 1.0:
            raise UsageError(f"{name} must be in [0, 1), got {value}")
    if not isinstance(decoupled, bool):
        raise UsageError(f"decoupled must be true or false, got {decoupled!r}")
    return AdaBelief(params, lr=lr, betas=(float(beta1), float(beta2)), eps=eps, weight_decay=weight_decay,
                     decoupled=decoupled)
