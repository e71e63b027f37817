"""Paper-specific training features as callbacks, so the trainer's loop is the generic part only.

Hooks (all optional): ``on_objective`` (the loss backward sees), ``before_step`` / ``after_step`` (around every
optimizer step), ``evaluate`` (wraps the scoring of the evaluated model; the columns it adds are declared in
``metric_columns``), and ``state_dict`` / ``load_state_dict`` (checkpoints). The worker builds them from the run's
`train` settings (``from_settings``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from repro.iterate_average import TriggeredIterateAverage
from repro.stats import MagnitudeStats

if TYPE_CHECKING:
    from repro.config import TrainSettings


class Callback:
    metric_columns: tuple[str, ...] = ()  # the columns evaluate() adds to a row

    def on_objective(self, objective: torch.Tensor) -> torch.Tensor:
        return objective

    def before_step(self, model: torch.nn.Module, epoch: int) -> None:
        pass

    def after_step(self, model: torch.nn.Module, epoch: int) -> None:
        pass

    def evaluate(self, model: torch.nn.Module, score: Callable[[], dict]) -> dict:
        return score()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LossMultiplier(Callback):
    """The optimizer sees c x the objective (the AdamW paper's scale-freeness test); logged losses stay unscaled."""

    def __init__(self, factor: float):
        self.factor = factor

    def on_objective(self, objective):
        return objective * self.factor


class GradientUpdateStats(Callback):
    """Histograms of |g| and |dx| at chosen epochs (repro/stats.py); rank 0 saves them as stats.npz."""

    def __init__(self, stats: MagnitudeStats):
        self.stats = stats

    def before_step(self, model, epoch):
        if self.stats.wants(epoch):
            self.stats.before_step(model)

    def after_step(self, model, epoch):
        if self.stats.wants(epoch):
            self.stats.after_step(model, epoch)

    def state_dict(self):
        s = self.stats
        return {"grad": s.grad, "update": s.update, "zeros": s.zeros, "steps": s.steps, "first_grad": s.first_grad,
                "first_update": s.first_update}

    def load_state_dict(self, state):
        for key, value in state.items():
            getattr(self.stats, key).copy_(value)


class IterateAveraging(Callback):
    """NT-ASGD evaluation (the CELGC authors' LM code): once the validation loss stalls for ``nonmono``
    evaluations, every later evaluation scores the running mean of the evaluated end-of-epoch models
    (``averaged_iterate``: how many models the mean holds; empty before it starts)."""

    metric_columns = ("averaged_iterate",)

    def __init__(self, nonmono: int):
        self.average = TriggeredIterateAverage(nonmono)

    def evaluate(self, model, score):
        if self.average.active:
            self.average.add(model)
            with self.average.swapped_in(model):
                return {**score(), "averaged_iterate": self.average.count}
        metrics = score()
        if "val_loss" in metrics:
            self.average.observe(metrics["val_loss"])
        return metrics

    def state_dict(self):
        return self.average.state_dict()

    def load_state_dict(self, state):
        self.average.load_state_dict(state)

    def to(self, device) -> None:
        if self.average.average is not None:
            self.average.average = [t.to(device) for t in self.average.average]


def from_settings(train: "TrainSettings", with_stats: bool) -> list[Callback]:
    """The callbacks a run's validated `train` settings ask for (``with_stats``: this rank records histograms)."""
    callbacks: list[Callback] = []
    if train.loss_multiplier != 1.0:
        callbacks.append(LossMultiplier(train.loss_multiplier))
    if with_stats and train.log_stats:
        callbacks.append(GradientUpdateStats(MagnitudeStats(train.log_stats)))
    if train.average_after_nonmono:
        callbacks.append(IterateAveraging(train.average_after_nonmono))
    return callbacks
