"""The task protocol: a benchmark's model, data, loss, metrics and presets.

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
    presets: ClassVar[dict[str, dict]]  # preset -> {"task": {...}, "optimizer": {...}, "sync": {...}, "schedule": {...}, "train": {...}}
    metric_columns: ClassVar[tuple[str, ...]]  # CSV columns filled by eval_metrics
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)  # evaluated every epoch
    final_splits: ClassVar[tuple[str, ...]] = ("val", "test")  # evaluated on the last row
    sample_unit: ClassVar[str] = "samples"
    description: ClassVar[str] = ""

    model: torch.nn.Module
    # Smoke tests (--max-steps) score only this many evaluation batches per worker and split; None: all.
    eval_batch_limit: int | None = None

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

    def describe(self, train_loss: float) -> str:
        """Short progress-bar text for a training loss."""
        return f"loss {train_loss:.3f}"
