"""FedFix: the server aggregates every Δt (``dt``) the updates of the clients that finished since (aggregation n at
(n + 1)Δt; an aggregation nobody finished for leaves the model as it is). Weights: ``reweighted``
d_i = ⌈τ_i/Δt⌉ p_i (a client contributes once every ⌈τ_i/Δt⌉ aggregations; the authors' ``FedFix-X_weight``);
``identical`` d_i = p_i (the authors' code defines no identical FedFix weights: docs/federated.md)."""
import math

import numpy as np

from repro.errors import UsageError
from repro.federated.strategies import STRATEGIES, Strategy, exact


class FedFix(Strategy):
    name = "fedfix"

    def __init__(self, dt: float, weighting: str, lr_global: float):
        super().__init__(weighting, lr_global)
        if not isinstance(dt, (int, float)) or not dt > 0:
            raise UsageError(f"fedfix: dt (time between aggregations) must be > 0, got {dt!r}")
        self.dt = exact(dt, "dt")

    def _next(self):
        time = (self.aggregations + 1) * self.dt
        return time, [i for i in range(self.clients) if self.return_times[i] <= time]

    def aggregation_weights(self, horizon):
        if self.weighting == "identical":
            return np.array(self.p, dtype=np.float64)
        return np.array([math.ceil(t / self.dt) for t in self.tau], dtype=np.float64) * self.p


@STRATEGIES.register("fedfix")
def fedfix(dt: float = 0.5, weighting: str = "identical", lr_global: float = 1.0):
    return FedFix(dt, weighting, lr_global)
