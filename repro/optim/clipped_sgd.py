"""Clipped SGD of CELGC (Liu et al., NeurIPS 2022): x <- x - min(eta, gamma / ||g||) * d."""
from __future__ import annotations

import torch

from repro.optim import OPTIMIZERS, run_closure


class ClippedSGD(torch.optim.Optimizer):
    """SGD whose step size is ``min(lr, clip / ||g||)``.

    ``||g||`` is the norm of the stochastic gradient over *all* parameters (one global norm, as in the
    authors' ``SGDClipGrad`` with ``clipping_option='local'``); the direction ``d`` is that gradient plus
    ``weight_decay * x``, passed through heavy-ball momentum when ``momentum > 0``. Under gradient
    all-reduce every step, ``g`` is the averaged gradient: that is the naive parallel-clipping baseline.
    Both ``lr`` and ``clip`` are scaled by schedules (the authors decay both by 10 on CIFAR).
    """

    scaled_hparams = ("lr", "clip")
    metric_columns = ("clip_fraction",)  # pop_metrics' keys: the metrics.csv column it reports

    def __init__(self, params, lr: float, clip: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, clip=clip, momentum=momentum, weight_decay=weight_decay))
        self._clipped = 0
        self._steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self._steps += 1
        if not grads:
            return loss
        # The norm, the step size and the clip count stay on the gradients' device: no host read per step, so a
        # GPU's queue is never drained here (as torch.nn.utils.clip_grad_norm_). Float64, as the Python arithmetic
        # of min(lr, clip / ||g||) would be; the step size is then rounded once to the parameters' dtype.
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).double()
        clipped = torch.zeros((), dtype=torch.bool, device=norm.device)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            direction = [p.grad for p in params]
            if group["weight_decay"]:
                direction = torch._foreach_add(direction, params, alpha=group["weight_decay"])
            if group["momentum"]:
                bufs = []
                for p, d in zip(params, direction):
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    bufs.append(state["momentum_buffer"])
                direction = bufs
            # 1e-10 guards against a zero gradient, as in the authors' code.
            ceiling = group["clip"] / (norm + 1e-10)
            clipped |= ceiling < group["lr"]
            step = torch.clamp(ceiling, max=group["lr"]).neg().to(params[0].dtype)
            # x + d * step in one pass, no temporary; bit for bit the scalar update x.add_(d, alpha=step) on a CPU
            torch._foreach_addcmul_(params, direction, [step] * len(params))
        self._clipped = self._clipped + clipped.long()  # a tensor on the device once a step has run
        return loss

    # The counts behind clip_fraction travel with the optimizer's state (a checkpoint between two evaluations).
    def state_dict(self):
        return {**super().state_dict(), "metrics": {"clipped": int(self._clipped), "steps": self._steps}}

    def load_state_dict(self, state_dict):
        metrics = state_dict.get("metrics", {"clipped": 0, "steps": 0})
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "metrics"})
        self._clipped, self._steps = int(metrics["clipped"]), int(metrics["steps"])

    def pop_metrics(self) -> dict[str, float]:
        """Fraction of steps since the last call whose step size was set by the clipping threshold."""
        frac = int(self._clipped) / self._steps if self._steps else float("nan")
        self._clipped = self._steps = 0
        return {"clip_fraction": frac}


@OPTIMIZERS.register("clipped-sgd")
def clipped_sgd(params, lr: float = 1.0, clip: float = 1.0, momentum: float = 0.0, weight_decay: float = 0.0):
    return ClippedSGD(params, lr=lr, clip=clip, momentum=momentum, weight_decay=weight_decay)
