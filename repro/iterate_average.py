"""Evaluation on averaged iterates, triggered non-monotonically (NT-ASGD style), as the CELGC authors'
language-model code does: once the validation loss fails to beat its best from more than ``nonmono``
evaluations ago, every later evaluation scores the running mean of the (synchronized) end-of-epoch
models. Training itself continues from the current iterate."""
from __future__ import annotations

from contextlib import contextmanager

import torch


class TriggeredIterateAverage:
    def __init__(self, nonmono: int):
        self.nonmono = nonmono
        self.history: list[float] = []
        self.average: list[torch.Tensor] | None = None
        self.count = 0

    @property
    def active(self) -> bool:
        return self.average is not None

    def observe(self, val_loss: float) -> None:
        """Record an evaluation of the current iterate; may switch averaging on for later evaluations."""
        if not self.active and len(self.history) > self.nonmono and val_loss > min(self.history[:-self.nonmono]):
            self.average = []
        self.history.append(val_loss)

    def state_dict(self) -> dict:
        """Validation-loss history, whether averaging is on (``average`` not None), the running mean and its count
        (tensors on the CPU)."""
        return {"history": list(self.history), "count": self.count, "active": self.active,
                "average": None if self.average is None else [t.detach().cpu().clone() for t in self.average]}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.history, self.count = [float(v) for v in state["history"]], int(state["count"])
        average = state["average"]
        if average is None and state.get("active"):
            average = []
        self.average = None if average is None else [t.to(device) if device is not None else t.clone()
                                                     for t in average]

    @torch.no_grad()
    def add(self, model: torch.nn.Module) -> None:
        self.count += 1
        params = [p.detach() for p in model.parameters()]
        if self.count == 1:
            self.average = [p.clone() for p in params]
        else:
            for a, p in zip(self.average, params):
                a.add_(p - a, alpha=1.0 / self.count)

    @contextmanager
    @torch.no_grad()
    def swapped_in(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        saved = [p.detach().clone() for p in model.parameters()]
        for p, a in zip(model.parameters(), self.average):
            p.copy_(a)
        try:
            yield
        finally:
            for p, s in zip(model.parameters(), saved):
                p.copy_(s)
