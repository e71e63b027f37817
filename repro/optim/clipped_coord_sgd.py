"""SGD with heavy-ball momentum and coordinate-wise clipping of its update (Pan & Li, "Toward Understanding Why
Adam Converges Faster Than SGD for Transformers", 2023, Algorithm 1 "SGD momentum with clipping"):

    buf <- momentum * buf + (g + weight_decay * x)      (buf = g + weight_decay * x at the first step)
    tau  = the (1 - fraction) quantile of |buf| over ALL coordinates of all parameters (one global threshold)
    x   <- x - lr * clip(buf, -tau, tau)

The update direction (the momentum buffer) is what gets clipped; the buffer itself is kept unclipped.
Quantile rule: with N coordinates and k = floor(fraction * N) (at most N - 1), tau is the (N - k)-th smallest
magnitude, i.e. the (k + 1)-th largest, the same threshold as the authors' sort-based code; it is found
with torch.kthvalue (torch.quantile refuses tensors over 16M elements). Ties: coordinates with |d_i| > tau are
clipped to sign(d_i) * tau and counted; those equal to tau are left as they are, so at most k coordinates
count as clipped, fewer when magnitudes tie at tau. ``fraction = 0`` is plain SGD; ``fraction = 1`` clips
every coordinate to the smallest magnitude.
"""
from __future__ import annotations

import math

import torch

from repro.errors import UsageError
from repro.optim import OPTIMIZERS, run_closure


class ClippedCoordSGD(torch.optim.Optimizer):
    """``fraction`` is one global setting (one threshold for all groups); lr, momentum and weight_decay may
    differ per param group. ``pop_metrics`` reports the fraction of coordinates clipped, averaged over the
    steps since the last call (the ``clip_fraction`` column; for clipped-sgd it counts clipped steps)."""

    metric_columns = ("clip_fraction",)  # pop_metrics' keys: the metrics.csv column it reports

    def __init__(self, params, lr: float, fraction: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.fraction = fraction
        self._clipped_sum = 0.0  # a device tensor once a step clipped: no host sync per step
        self._steps = 0

    def _directions(self, group: dict, params: list[torch.Tensor]) -> list[torch.Tensor]:
        directions = []
        for p in params:
            d = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
            if group["momentum"]:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d.detach().clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                d = state["momentum_buffer"]
            directions.append(d)
        return directions

    def _threshold(self, directions: list[torch.Tensor]) -> torch.Tensor | None:
        """tau as a 0-dim tensor, or None where nothing is to be clipped (k = 0)."""
        n = sum(d.numel() for d in directions)
        # round(): fraction * n may land just below an integer (0.29 * 100 = 28.999...96)
        k = min(n - 1, math.floor(round(self.fraction * n, 6)))
        if k <= 0:
            return None
        dtype = directions[0].dtype
        for d in directions[1:]:
            dtype = torch.promote_types(dtype, d.dtype)
        magnitudes = torch.cat([d.detach().abs().flatten().to(dtype) for d in directions])
        tau = magnitudes.kthvalue(n - k).values
        self._clipped_sum = self._clipped_sum + (magnitudes > tau).sum() / n
        return tau

    @torch.no_grad()
    def step(self, closure=None):
        loss = run_closure(closure)
        updates = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                updates.append((group["lr"], params, self._directions(group, params)))
        tau = self._threshold([d for _, _, directions in updates for d in directions]) if updates else None
        for lr, params, directions in updates:
            if tau is not None:
                directions = [d.clamp(-tau, tau) for d in directions]  # new tensors: the buffer stays unclipped
            torch._foreach_add_(params, directions, alpha=-lr)
        self._steps += 1
        return loss

    # The counts behind clip_fraction travel with the optimizer's state (a checkpoint between two evaluations).
    def state_dict(self):
        return {**super().state_dict(), "metrics": {"clipped_sum": float(self._clipped_sum), "steps": self._steps}}

    def load_state_dict(self, state_dict):
        metrics = state_dict.get("metrics", {"clipped_sum": 0.0, "steps": 0})
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "metrics"})
        self._clipped_sum, self._steps = float(metrics["clipped_sum"]), int(metrics["steps"])

    def pop_metrics(self) -> dict[str, float]:
        """Fraction of coordinates clipped, averaged over the steps since the last call."""
        frac = float(self._clipped_sum) / self._steps if self._steps else float("nan")
        self._clipped_sum, self._steps = 0.0, 0
        return {"clip_fraction": frac}


@OPTIMIZERS.register("clipped-coord-sgd")
def clipped_coord_sgd(params, lr: float = 0.1, fraction: float = 0.1, momentum: float = 0.9,
                      weight_decay: float = 0.0):
    if not 0.0 <= float(fraction) <= 1.0:
        raise UsageError(f"fraction must be in [0, 1], got {fraction}")
    return ClippedCoordSGD(params, lr=lr, fraction=float(fraction), momentum=momentum, weight_decay=weight_decay)
