"""Federated strategies: when the server aggregates, whose updates enter, and with what weight.

Shaped like Flower's ``Strategy``: ``select()`` is the selection (Flower's ``configure_fit``: here the emulated event
clock says which clients' results the next aggregation takes and when), ``aggregate()`` the aggregation (Flower's
``aggregate_fit``). The global update is Fraboni et al.'s (JMLR 2023, eq. 3; the authors' ``Server.aggregation``):

    θ ← θ + η_g Σ_{i∈S_n} d_i (θ_i^received − θ_i^sent)

with θ_i^sent the (possibly stale) server version client i started from. Each module of this package registers one
strategy; a strategy is the scheme's selection rule plus its aggregation weights d_i.

The clock is exact: client times, Δt and the horizon are rationals (see ``exact``), so two clients that return at
the same instant tie exactly, and ties go to the lowest client index. A client that returns waits for the
aggregation that takes its update and starts its next local work from that aggregation's result (the authors'
``clients_time_schedule``), so its next return is the aggregation's time plus its τ_i.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from repro.errors import UsageError
from repro.registry import Registry, check_kwargs

STRATEGIES: Registry[Callable[..., "Strategy"]] = Registry("strategy", package=__name__)

WEIGHTINGS = ("identical", "reweighted")


def exact(value, what: str = "value") -> Fraction:
    """``value`` as a rational: a float is read as the simplest fraction within 1e-12 of it (0.8/9 steps of F-80
    become k/45 exactly, so sums of client times tie when the real numbers do); otherwise its exact binary value."""
    if isinstance(value, (Fraction, int, np.integer)):
        return Fraction(int(value)) if not isinstance(value, Fraction) else value
    x = float(value)
    if not np.isfinite(x):
        raise UsageError(f"{what} must be a finite number, got {value!r}")
    simple = Fraction(x).limit_denominator(10**9)
    return simple if abs(float(simple) - x) <= 1e-12 * max(abs(x), 1e-300) else Fraction(x)


@dataclass(frozen=True)
class Aggregation:
    """One server aggregation: its index n, emulated time, the contributing clients (ascending) and the server
    version each of them started from (0 = the initial model, n + 1 = the result of aggregation n)."""
    index: int
    time: Fraction
    clients: tuple[int, ...]
    versions: tuple[int, ...]


class Strategy:
    """Selection (the event clock) and aggregation of one federated scheme. Built from its settings, then
    ``bind(tau, p)`` gives it the clients' speeds and importances before the first ``select()``."""

    name = "?"

    def __init__(self, weighting: str = "identical", lr_global: float = 1.0):
        if weighting not in WEIGHTINGS:
            raise UsageError(f"strategy {self.name!r}: weighting must be one of {', '.join(WEIGHTINGS)}, "
                             f"got {weighting!r}")
        if not float(lr_global) > 0:
            raise UsageError(f"strategy {self.name!r}: lr_global must be > 0, got {lr_global!r}")
        self.weighting = weighting
        self.lr_global = float(lr_global)
        self.tau: list[Fraction] = []
        self.p = np.zeros(0)
        self.d = np.zeros(0)

    # -- clients ------------------------------------------------------------------------------------------------
    def bind(self, tau: Sequence, p: Sequence[float] | None = None, horizon=None) -> "Strategy":
        """The clients' times τ_i (> 0) and importances p_i (default uniform); ``horizon`` where the weights need
        the schedule (FedBuff reweighted). Resets the clock to time 0, every client working on version 0."""
        tau = [exact(t, "a client time") for t in tau]
        if not tau or min(tau) <= 0:
            raise UsageError("client times must be > 0 and there must be at least one client")
        self.tau = tau
        self.check_clients(len(tau))
        self.p = np.full(len(tau), 1.0 / len(tau)) if p is None else np.asarray(p, dtype=np.float64)
        if self.p.shape != (len(tau),):
            raise UsageError(f"{len(tau)} clients but {self.p.size} importances p")
        self.reset()
        self.d = self.aggregation_weights(horizon)
        return self

    def check_clients(self, count: int) -> None:
        """Reject settings that cannot work with ``count`` clients (one line, before any worker starts)."""

    def reset(self) -> None:
        self.return_times = list(self.tau)  # every client starts on version 0 at time 0
        self.sent_versions = [0] * len(self.tau)
        self.aggregations = 0
        self.time = Fraction(0)

    @property
    def clients(self) -> int:
        return len(self.tau)

    # -- selection (Flower's configure_fit) ---------------------------------------------------------------------
    def _next(self) -> tuple[Fraction, list[int]]:
        """The next aggregation's time and the clients whose updates it takes (the scheme's rule)."""
        raise NotImplementedError

    def peek(self) -> tuple[Fraction, tuple[int, ...]]:
        """The next aggregation's time and clients, without advancing the clock."""
        time, chosen = self._next()
        return time, tuple(sorted(chosen))

    def select(self) -> Aggregation:
        """Advance the clock to the next aggregation: who contributes, from which version, and when."""
        time, chosen = self.peek()
        event = Aggregation(self.aggregations, time, chosen, tuple(self.sent_versions[i] for i in chosen))
        self.aggregations += 1
        self.time = time
        for i in chosen:  # each contributor receives the new model at the aggregation and starts again
            self.return_times[i] = time + self.tau[i]
            self.sent_versions[i] = self.aggregations
        return event

    def events(self, horizon) -> Iterable[Aggregation]:
        """Aggregations from the current clock state up to emulated time ``horizon`` (inclusive)."""
        horizon = exact(horizon, "horizon")
        while self.peek()[0] <= horizon:
            yield self.select()

    def _first_by_return(self, count: int) -> list[int]:
        # earliest returns first; ties go to the lowest client index
        return sorted(range(self.clients), key=lambda i: (self.return_times[i], i))[:count]

    # -- aggregation (Flower's aggregate_fit) -------------------------------------------------------------------
    def aggregation_weights(self, horizon) -> np.ndarray:
        """d_i of every client (the scheme's and weighting's rule)."""
        raise NotImplementedError

    def weight(self, client: int) -> float:
        return float(self.d[client])

    def weighted_sum(self, updates: Mapping[int, Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        """Σ d_i Δ_i over ``updates`` (client -> Δ_i = θ_i^received − θ_i^sent), in ascending client order: the part
        of an aggregation one process computes; the processes' parts are summed by one reduction."""
        total: list[torch.Tensor] | None = None
        for i in sorted(updates):
            scaled = [self.weight(i) * t for t in updates[i]]
            total = scaled if total is None else [a + b for a, b in zip(total, scaled)]
        if total is None:
            raise ValueError("no updates to sum")
        return total

    @torch.no_grad()
    def aggregate(self, server: Sequence[torch.Tensor], weighted_sum: Sequence[torch.Tensor]) -> None:
        """θ ← θ + η_g Σ d_i Δ_i, in place on the server model's tensors."""
        torch._foreach_add_(list(server), list(weighted_sum), alpha=self.lr_global)

    # -- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"name": self.name, "tau": [str(t) for t in self.tau], "aggregations": self.aggregations,
                "time": str(self.time), "return_times": [str(t) for t in self.return_times],
                "sent_versions": list(self.sent_versions)}

    def load_state_dict(self, state: dict) -> None:
        if state["name"] != self.name or state["tau"] != [str(t) for t in self.tau]:
            raise ValueError(f"checkpoint of strategy {state['name']!r} with other client times does not fit "
                             f"{self.name!r} with these clients")
        self.aggregations = int(state["aggregations"])
        self.time = Fraction(state["time"])
        self.return_times = [Fraction(t) for t in state["return_times"]]
        self.sent_versions = [int(v) for v in state["sent_versions"]]


def make(name: str, **options) -> Strategy:
    builder = STRATEGIES.get(name)
    check_kwargs("strategy", name, builder, options)
    strategy = builder(**options)
    if strategy is None:
        raise UsageError(f"strategy {name!r} runs no federated clients: it has no clock and no weights")
    return strategy
