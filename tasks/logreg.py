"""Multinomial logistic regression on MNIST and Fashion-MNIST: the model of Fraboni et al.'s MNIST experiments
(the authors' ``LogisticRegression(784, 10)`` in ``FL/create_model.py``, cross-entropy loss), used by the federated
runs (docs/federated.md). Data, normalization and evaluation are the IDX image tasks' (tasks/mnist.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from repro.task import TASKS
from repro.tasks.mnist import IdxImageTask, MNISTOptions


class LogisticRegression(nn.Module):
    def __init__(self, inputs: int = 28 * 28, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(inputs, classes)

    def forward(self, x):
        return self.fc1(x.flatten(1))


@dataclass
class LogRegOptions(MNISTOptions):
    batch_size: int = 64  # the authors' B (list_exp_to_run.py: l_B = [64])


class _LogRegTask(IdxImageTask):
    Options = LogRegOptions

    def __init__(self, options, rank, world_size, device):
        super().__init__(options, rank, world_size, device)
        self.model = LogisticRegression().to(device)


@TASKS.register("logreg-mnist")
class MNISTLogReg(_LogRegTask):
    description = "logistic regression on MNIST (Fraboni et al.'s federated MNIST model)"
    dataset = "mnist"


@TASKS.register("logreg-fashion-mnist")
class FashionMNISTLogReg(_LogRegTask):
    description = "logistic regression on Fashion-MNIST (Debian dataset-fashion-mnist files)"
    dataset = "fashion-mnist"
