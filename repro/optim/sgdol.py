"""SGDOL (Zhuang, Cutkosky & Orabona, ICML 2019): SGD whose stepsize is learned online.

Each step draws two independent stochastic gradients at the same point x_t: g_t moves the parameters,
g'_t only serves to estimate how well the step is aligned with the true gradient. The stepsize is
FTRL-Proximal on the paper's surrogate losses, which has the closed form

    eta_{t+1} = clip( (alpha + sum_s <g_s, g'_s>) / (M * (alpha + sum_s ||g_s||^2)), 0, 2/M )

with eta_1 = 1/M. M (``smoothness``) is the assumed smoothness of the loss; ``alpha`` is the initial
regularizer (the authors' rule of thumb: alpha = M). Using g for ||g||^2 and an *independent* g' for the
inner product is what makes the surrogate loss an unbiased estimate; one gradient used twice would give
eta = 1/M forever. Which data the two closure calls see is the trainer's `pairing` setting (docs/sgdol.md):
a new minibatch each (the paper), or one minibatch with two dropout masks (the authors' MNIST code).
"""
from __future__ import annotations

import torch

from repro.errors import UsageError
from repro.optim import OPTIMIZERS

NEEDS_CLOSURE = ("SGDOL needs two stochastic gradients per step: call step(closure) with a closure that draws a "
                 "minibatch (a fresh one per call for independent gradients), zeroes the gradients, runs backward "
                 "and returns the loss")


class SGDOL(torch.optim.Optimizer):
    """SGDOL with one global stepsize (``per_coordinate=False``, the paper's algorithm) or one stepsize
    per coordinate (``per_coordinate=True``: the same sums kept elementwise).

    The current stepsize is kept in every param group's ``lr`` (for the coordinate-wise variant: the mean
    over all coordinates, for logging only). The global sums live in ``param_groups[0]`` and the
    coordinate-wise ones in ``state[p]``, so ``state_dict()`` checkpoints them. ``weight_decay`` adds
    ``weight_decay * x`` to both gradients, i.e. SGDOL then optimizes the L2-regularized objective.
    """

    # The stepsize is learned: a schedule (or the LM tasks' rescaling) must not multiply it.
    scaled_hparams = ()

    def __init__(self, params, smoothness: float = 10.0, alpha: float = 10.0, weight_decay: float = 0.0,
                 per_coordinate: bool = False):
        if not smoothness > 0:
            raise UsageError(f"smoothness (M) must be > 0, got {smoothness}")
        if not alpha > 0:
            raise UsageError(f"alpha must be > 0, got {alpha}")
        defaults = dict(lr=1.0 / smoothness, smoothness=smoothness, alpha=alpha, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.per_coordinate = per_coordinate
        first = self.param_groups[0]
        first.setdefault("sum_inner_products", float(alpha))
        first.setdefault("sum_sq_norms", float(alpha))

    def _gradients(self, clone: bool) -> list[torch.Tensor]:
        """The current gradient of every parameter (zeros where none), plus weight decay."""
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError("SGDOL does not support sparse gradients")
                g = torch.zeros_like(p) if p.grad is None else (p.grad.clone() if clone else p.grad)
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                grads.append(g)
        return grads

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError(NEEDS_CLOSURE)
        params = [p for group in self.param_groups for p in group["params"]]
        with torch.enable_grad():
            loss = closure()
        first = self._gradients(clone=True)  # the next closure call overwrites .grad
        with torch.enable_grad():
            closure()
        second = self._gradients(clone=False)
        if self.per_coordinate:
            self._step_per_coordinate(params, first, second)
        else:
            self._step_global(params, first, second)
        return loss

    def _step_global(self, params, first, second) -> None:
        head = self.param_groups[0]
        m = head["smoothness"]
        eta = head["lr"]
        torch._foreach_add_(params, first, alpha=-eta)  # the step uses the current eta ...
        # ... and only then do g_t, g'_t enter the sums (FTRL predicts eta_t before seeing its loss).
        # ||g||^2 is computed as <g, g> by the same code as <g, g'>, so g == g' gives exactly eta = 1/M.
        inner = torch.stack([torch.sum(a * b, dtype=torch.float64) for a, b in zip(first, second)]).sum()
        square = torch.stack([torch.sum(a * a, dtype=torch.float64) for a in first]).sum()
        inner, square = torch.stack([inner, square]).tolist()  # the step's one device-to-host read: eta is a number
        head["sum_inner_products"] += inner
        head["sum_sq_norms"] += square
        eta_next = min(max(head["sum_inner_products"] / (m * head["sum_sq_norms"]), 0.0), 2.0 / m)
        for group in self.param_groups:
            group["lr"] = eta_next

    def _step_per_coordinate(self, params, first, second) -> None:
        head = self.param_groups[0]
        m, alpha = head["smoothness"], head["alpha"]
        sums, count = [], 0
        for p, g, g2 in zip(params, first, second):
            state = self.state[p]
            if not state:
                state["eta"] = torch.full_like(p, 1.0 / m)
                state["sum_inner_products"] = torch.full_like(p, alpha)
                state["sum_sq_norms"] = torch.full_like(p, alpha)
            p.addcmul_(state["eta"], g, value=-1.0)
            state["sum_inner_products"].addcmul_(g, g2)
            state["sum_sq_norms"].addcmul_(g, g)
            torch.div(state["sum_inner_products"], state["sum_sq_norms"], out=state["eta"])
            state["eta"].div_(m).clamp_(0.0, 2.0 / m)
            sums.append(state["eta"].sum(dtype=torch.float64))
            count += p.numel()
        total = float(torch.stack(sums).sum()) if sums else 0.0  # one host read per step, for the logged mean
        for group in self.param_groups:
            group["lr"] = total / max(count, 1)


@OPTIMIZERS.register("sgdol")
def sgdol(params, smoothness: float = 10.0, alpha: float = 10.0, weight_decay: float = 0.0):
    """One global self-tuned stepsize; two gradient evaluations (minibatches) per step."""
    return SGDOL(params, smoothness=smoothness, alpha=alpha, weight_decay=weight_decay)


@OPTIMIZERS.register("sgdol-coord")
def sgdol_coord(params, smoothness: float = 10.0, alpha: float = 10.0, weight_decay: float = 0.0):
    """One self-tuned stepsize per coordinate (elementwise sums)."""
    return SGDOL(params, smoothness=smoothness, alpha=alpha, weight_decay=weight_decay, per_coordinate=True)


sgdol.gradients_per_step = sgdol_coord.gradients_per_step = 2  # read by repro.optim.gradients_per_step
