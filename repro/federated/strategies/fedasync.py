"""Asynchronous FedAvg: the server aggregates each client's update as it returns (one client per aggregation).
Weights: ``identical`` d_i = 1, which biases the model toward fast clients (they contribute 1/τ_i times as often);
``reweighted`` d_i = (Σ_j 1/τ_j) τ_i p_i, which makes every client's expected contribution p_i (the authors'
``Async_weight``)."""
import numpy as np

from repro.federated.strategies import STRATEGIES, Strategy


class FedAsync(Strategy):
    name = "fedasync"

    def _next(self):
        (first,) = self._first_by_return(1)
        return self.return_times[first], [first]

    def aggregation_weights(self, horizon):
        if self.weighting == "identical":
            return np.ones(self.clients)
        tau = np.array([float(t) for t in self.tau])
        return np.sum(1.0 / tau) * tau * self.p


@STRATEGIES.register("fedasync")
def fedasync(weighting: str = "identical", lr_global: float = 1.0):
    return FedAsync(weighting, lr_global)
