"""The task protocol: a benchmark's model, data, loss and metrics (its settings are recipes,
repro/recipes/).

The trainer and the optimizers only ever use this interface (as in AlgoPerf, the algorithm never sees a
task's internals). Tasks live in ``tasks/`` (installed as ``repro.tasks``), one module each, and register
themselves in ``TASKS``.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch

from repro.errors import UsageError
from repro.registry import Registry

TASKS: Registry[type["Task"]] = Registry("task", package="repro.tasks")


@dataclass
class Batch:
    data: Any
    samples: int  # what counts toward an epoch (tokens for language models, images for classifiers)
    lr_scale: float = 1.0  # AWD-LSTM's variable-length BPTT rescales the step size by seq_len / bptt


class Task(ABC):
    """Built once per worker. Subclasses set the class attributes and implement the methods."""

    Options: ClassVar[type]  # a dataclass of the task's own settings
    metric_columns: ClassVar[tuple[str, ...]]  # CSV columns filled by eval_metrics
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)  # evaluated every epoch
    final_splits: ClassVar[tuple[str, ...]] = ("val", "test")  # evaluated on the last row
    sample_unit: ClassVar[str] = "samples"
    description: ClassVar[str] = ""

    model: torch.nn.Module
    # Samples (summed over workers) that make one epoch; set by __init__ (the trainer's epoch fraction and progress).
    samples_per_epoch: int
    # Smoke tests (--max-steps) score only this many evaluation batches per worker and split; None: all.
    eval_batch_limit: int | None = None
    # Attributes holding state carried from batch to batch (e.g. ("hidden",)): the default state_dict.
    carried_state: ClassVar[tuple[str, ...]] = ()
    # Image tasks: the model and its input batches can use the channels_last memory format (see use_channels_last).
    takes_channels_last: ClassVar[bool] = False

    def use_channels_last(self) -> None:
        """Put the model (and, from now on, every input batch) in channels_last memory format."""
        raise NotImplementedError(f"{type(self).__name__} has no channels_last form")

    @classmethod
    def parse_options(cls, values: dict) -> Any:
        names = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"task option(s) {', '.join(unknown)} not known to this task (known: {', '.join(sorted(names))})")
        return cls.Options(**values)

    @classmethod
    def prepare(cls, options: Any) -> Any:
        """Runs once in the launching process before any worker starts: find, download and verify data.
        Returns the options with paths resolved. Raises UsageError on bad input."""
        return options

    @abstractmethod
    def __init__(self, options: Any, rank: int, world_size: int, device: torch.device):
        """Build the model (on ``device``) and this worker's view of the data."""

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """This worker's minibatches for ``epoch``; all workers yield the same number of batches."""

    @abstractmethod
    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective to differentiate, data loss to log)."""

    @abstractmethod
    def eval_sums(self, split: str) -> torch.Tensor:
        """Additive statistics of this worker's shard of ``split`` (summed over workers by the trainer)."""

    @abstractmethod
    def eval_metrics(self, split: str, sums: torch.Tensor) -> dict[str, float]:
        """Metrics (CSV columns) from the summed statistics of ``split``."""

    def batches_from(self, epoch: int, skip: int) -> Iterator[Batch]:
        """``train_batches(epoch)`` without its first ``skip`` batches (a resume mid-epoch). The skipping is done
        before this returns: the caller then sets the RNG state the next batch was first drawn under. Tasks whose
        batches cost work to make override it to skip without making them."""
        batches = iter(self.train_batches(epoch))
        for _ in range(skip):
            next(batches, None)
        return batches

    def state_dict(self) -> dict:
        """State a worker carries from one training batch to the next besides its model and the batch order (which
        ``train_batches(epoch)`` must derive from the epoch and the run's seed alone), e.g. a recurrent model's
        hidden state. Saved with the trainer's state at epoch ends (it matters when a two-gradient optimizer has
        read into the next epoch's batches). Default: the attributes named in ``carried_state``."""
        return {name: getattr(self, name, None) for name in self.carried_state}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``, after the trainer has restored its batch stream. Default: the
        ``carried_state`` attributes, tensors (also inside lists and tuples) moved to the task's ``device``."""
        device = getattr(self, "device", None)
        for name, value in state.items():
            setattr(self, name, _to_device(value, device))

    def describe(self, train_loss: float) -> str:
        """Short progress-bar text for a training loss."""
        return f"loss {train_loss:.3f}"


def _to_device(value: Any, device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device) if device is not None else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
