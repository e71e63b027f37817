"""Adam and its weight-decay variants (Zhuang et al., "Understanding AdamW through proximal methods and
scale-freeness", TMLR 2022), plus AdaGrad as a baseline.

All variants use the paper's convention for ``weight_decay = lambda`` with step size ``lr_t`` (``lr_0`` =
the step size before any schedule, ``group["initial_lr"]``), beta = (0.9, 0.999), eps = 1e-8, and decay every
parameter (biases included), as the authors' code does:

* ``adam-l2``:  g <- g + lambda * x, then the Adam step.
* ``adamw``:    x <- x * (1 - lambda * lr_t / lr_0), then the Adam step on the plain gradient.
* ``adamprox``: the Adam step, then x <- x / (1 + lambda * lr_t / lr_0) (the proximal map of lambda/2 ||x||^2).
* ``adam``:     no decay.

Where torch's own optimizer is exactly this update it is used as is; only AdamProx is new code.
"""
from __future__ import annotations

import torch

from repro.errors import UsageError
from repro.optim import OPTIMIZERS

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def _betas(beta1: float, beta2: float) -> tuple[float, float]:
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= float(value) < 1.0:
            raise UsageError(f"{name} must be in [0, 1), got {value}")
    return float(beta1), float(beta2)


@OPTIMIZERS.register("adam")
def adam(params, lr: float = 1e-3, beta1: float = BETA1, beta2: float = BETA2, eps: float = EPS):
    """Plain Adam (Kingma & Ba) with bias correction: torch.optim.Adam."""
    return torch.optim.Adam(params, lr=lr, betas=_betas(beta1, beta2), eps=eps)


@OPTIMIZERS.register("adam-l2")
def adam_l2(params, lr: float = 1e-3, weight_decay: float = 0.0, beta1: float = BETA1, beta2: float = BETA2,
            eps: float = EPS):
    """Adam on the l2-regularised loss: torch.optim.Adam's ``weight_decay`` adds ``lambda * x`` to the
    gradient before the moment estimates, which is exactly the paper's Adam-l2 (and the authors' 'AdamL2')."""
    return torch.optim.Adam(params, lr=lr, betas=_betas(beta1, beta2), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float = 1e-3, weight_decay: float = 0.0, beta1: float = BETA1, beta2: float = BETA2,
          eps: float = EPS):
    """AdamW in the paper's convention, built on torch.optim.AdamW.

    torch's AdamW multiplies x by ``1 - lr_t * wd`` before its Adam step (the same Adam step as torch.optim.Adam,
    on the un-decayed gradient). With ``wd = lambda / lr_0`` this factor is ``1 - lambda * lr_t / lr_0``: the
    paper's AdamW for a constant step size and under any schedule that rescales ``group["lr"]`` (the trainer
    does exactly that), so no new code is needed. Note: the param group therefore stores ``lambda / lr_0`` as
    ``weight_decay``; the run's config records ``lambda``.
    """
    # lr_0 = 0 never moves x, decayed or not; avoid dividing by it.
    return torch.optim.AdamW(params, lr=lr, betas=_betas(beta1, beta2), eps=eps,
                             weight_decay=weight_decay / lr if lr > 0 else 0.0)


class AdamProx(torch.optim.Adam):
    """Adam followed by the proximal step of (lambda/2)||x||^2: x <- x / (1 + lambda * lr_t / lr_0).

    The Adam step is torch's (no decay in the gradient). ``lr_0`` is ``group["initial_lr"]``, which is set here
    to the constructor's ``lr`` unless a scheduler (the trainer, or a torch LRScheduler) has set it already.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, betas=(BETA1, BETA2), eps: float = EPS):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=0.0)
        for group in self.param_groups:
            group["prox_weight_decay"] = 0.0 if group.get("no_decay") else weight_decay
            group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)  # runs the closure first, so group["lr"] is this step's lr_t
        for group in self.param_groups:
            lam, lr0 = group["prox_weight_decay"], group["initial_lr"]
            if lam == 0 or lr0 == 0:
                continue
            params = [p for p in group["params"] if p.grad is not None]  # the ones Adam just moved
            if params:
                torch._foreach_div_(params, 1.0 + lam * group["lr"] / lr0)
        return loss


@OPTIMIZERS.register("adamprox")
def adamprox(params, lr: float = 1e-3, weight_decay: float = 0.0, beta1: float = BETA1, beta2: float = BETA2,
             eps: float = EPS):
    return AdamProx(params, lr=lr, weight_decay=weight_decay, betas=_betas(beta1, beta2), eps=eps)


@OPTIMIZERS.register("adagrad")
def adagrad(params, lr: float = 1e-2, weight_decay: float = 0.0, eps: float = 1e-10):
    """AdaGrad (Duchi et al.): torch.optim.Adagrad with no lr decay and a zero initial accumulator;
    ``weight_decay`` adds ``lambda * x`` to the gradient."""
    return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, eps=eps)
