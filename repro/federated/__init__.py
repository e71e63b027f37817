"""Federated learning on an emulated clock (Fraboni, Vidal, Kameni, Lorenzi, JMLR 24, 2023).

The maths every part of the federated runs shares, importable on its own:

- ``client_times(M, spread)``: the clients' times per local work, τ_i = 1 − i·spread/(M − 1) (the paper's "F-X"
  scenario with spread = X/100): client 0 the slowest at 1.0, client M − 1 ``spread`` faster.
- ``schedule(scheme, tau, horizon, **opts)``: the event clock's aggregations up to ``horizon``, as
  ``(times, versions)``: ``times[n]`` the emulated time of aggregation n, ``versions[n, i]`` the server version
  client i started from if it contributes to aggregation n (0 = the initial model, n + 1 = the result of
  aggregation n), else −1.
- ``weights(scheme, weighting, tau, p, **opts)``: the aggregation weights d_i.

Schemes are the strategies of ``repro.federated.strategies`` (``fedavg``, ``fedasync``, ``fedbuff`` with ``c``,
``fedfix`` with ``dt``); ``schedule`` and ``weights`` run the same strategy objects the federated driver runs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from repro.errors import UsageError
from repro.federated.strategies import STRATEGIES, Strategy, make

__all__ = ["STRATEGIES", "Strategy", "client_times", "make", "schedule", "weights"]


def client_times(M: int, spread: float) -> np.ndarray:
    """τ_i = 1 − i·spread/(M − 1) for i = 0..M−1 (one client: [1.0]); ``spread`` in [0, 1)."""
    if int(M) != M or M < 1:
        raise UsageError(f"the number of clients must be an integer >= 1, got {M!r}")
    if not 0 <= spread < 1:
        raise UsageError(f"the speed spread must be in [0, 1) (the fastest client's time is 1 - spread), got {spread!r}")
    if M == 1:
        return np.ones(1)
    return 1.0 - np.arange(M) * spread / (M - 1)


def schedule(scheme: str, tau: Sequence[float], horizon: float, **opts) -> tuple[np.ndarray, np.ndarray]:
    """The aggregations of ``scheme`` with client times ``tau`` up to emulated time ``horizon`` (inclusive)."""
    strategy = make(scheme, **opts).bind(tau, horizon=horizon)
    times, versions = [], []
    for event in strategy.events(horizon):
        row = np.full(strategy.clients, -1, dtype=np.int64)
        row[list(event.clients)] = event.versions
        times.append(float(event.time))
        versions.append(row)
    return np.array(times, dtype=np.float64), np.array(versions, dtype=np.int64).reshape(len(times), strategy.clients)


def weights(scheme: str, weighting: str, tau: Sequence[float], p: Sequence[float] | None = None, **opts) -> np.ndarray:
    """d_i of ``scheme`` under ``weighting`` (``identical`` or ``reweighted``); p defaults to uniform. FedBuff's
    reweighted weights come from its schedule: pass ``horizon``."""
    horizon = opts.pop("horizon", None)
    return make(scheme, weighting=weighting, **opts).bind(tau, p, horizon=horizon).d
