"""diffGrad (Dubey et al., "diffGrad: An Optimization Method for Convolutional Neural Networks", IEEE TNNLS 2019):
Adam whose bias-corrected first moment is damped coordinate-wise by the friction of the gradient change.
At step t with gradient g_t (g_0 = 0, so at t = 1 the friction is sigmoid(|g_1|)):

    m_t = beta1 * m + (1 - beta1) * g_t,   v_t = beta2 * v + (1 - beta2) * g_t^2
    xi_t = sigmoid(|g_{t-1} - g_t|)
    x  <- x - lr * xi_t * (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)

This is the paper's update. The authors' code puts eps outside the bias correction of v, i.e. uses
sqrt(v_t) + eps with step lr * sqrt(1 - beta2^t) / (1 - beta1^t): the same update but with
eps * sqrt(1 - beta2^t) in place of eps, a difference only where sqrt(v_hat) is near eps.
``weight_decay = lambda`` adds lambda * x to g before everything (l2), as the authors' code does, so the
friction also sees the decayed gradient.
"""
from __future__ import annotations

import torch

from repro.errors import UsageError
from repro.optim import OPTIMIZERS, run_closure


class DiffGrad(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        for group in self.param_groups:
            (beta1, beta2), eps, lr = group["betas"], group["eps"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["previous_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                friction = torch.sigmoid((state["previous_grad"] - grad).abs_())
                state["previous_grad"].copy_(grad)  # a copy: p.grad may be zeroed in place before the next step
                denom = (v / (1.0 - beta2 ** t)).sqrt_().add_(eps)
                p.addcdiv_(friction.mul_(m), denom, value=-lr / (1.0 - beta1 ** t))
        return loss


@OPTIMIZERS.register("diffgrad")
def diffgrad(params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
             weight_decay: float = 0.0):
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= float(value) < 1.0:
            raise UsageError(f"{name} must be in [0, 1), got {value}")
    return DiffGrad(params, lr=lr, betas=(float(beta1), float(beta2)), eps=eps, weight_decay=weight_decay)
