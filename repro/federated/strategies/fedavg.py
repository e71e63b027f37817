"""Synchronous FedAvg: every client works on the current model; the server waits for the slowest (one round lasts
max τ_i) and weighs client i by its importance p_i (the authors' ``FL`` scheme, either weighting)."""
import numpy as np

from repro.federated.strategies import STRATEGIES, Strategy


class FedAvg(Strategy):
    name = "fedavg"

    def _next(self):
        return max(self.return_times), list(range(self.clients))

    def aggregation_weights(self, horizon):
        return np.array(self.p, dtype=np.float64)


@STRATEGIES.register("fedavg")
def fedavg(weighting: str = "identical", lr_global: float = 1.0):
    return FedAvg(weighting, lr_global)
