"""FedBuff: the server aggregates when ``c`` clients have returned (the c earliest; ties to the lowest index), at the
time the c-th returns. Weights: ``identical`` d_i = 1/c; ``reweighted`` d_i = p_i / q_i, q_i the fraction of the
aggregations up to the horizon that take client i (the authors' ``FedBuff`` weights, computed from the schedule)."""
import copy

import numpy as np

from repro.errors import UsageError
from repro.federated.strategies import STRATEGIES, Strategy


class FedBuff(Strategy):
    name = "fedbuff"

    def __init__(self, c: int, weighting: str, lr_global: float):
        super().__init__(weighting, lr_global)
        if int(c) != c or c < 1:
            raise UsageError(f"fedbuff: c (clients per aggregation) must be an integer >= 1, got {c!r}")
        self.c = int(c)

    def check_clients(self, count):
        if self.c > count:
            raise UsageError(f"fedbuff: c={self.c} is larger than the {count} clients")

    def _next(self):
        chosen = self._first_by_return(self.c)
        return max(self.return_times[i] for i in chosen), chosen

    def aggregation_weights(self, horizon):
        if self.weighting == "identical":
            return np.full(self.clients, 1.0 / self.c)
        if horizon is None:
            raise UsageError("fedbuff reweighted: the weights need the run's horizon (its participation rates)")
        clock = copy.deepcopy(self)
        clock.reset()
        taken = np.zeros(self.clients)
        rounds = 0
        for event in clock.events(horizon):
            taken[list(event.clients)] += 1
            rounds += 1
        if not taken.all():
            never = int(np.flatnonzero(taken == 0)[0])
            raise UsageError(f"fedbuff reweighted: client {never} never contributes before the horizon {horizon}")
        return self.p / (taken / rounds)


@STRATEGIES.register("fedbuff")
def fedbuff(c: int = 5, weighting: str = "identical", lr_global: float = 1.0):
    return FedBuff(c, weighting, lr_global)
