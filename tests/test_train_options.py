"""The trainer's --loss-multiplier and --log-stats, on a toy task in this process (no workers)."""
import numpy as np
import pytest
import torch

from repro import optim
from repro.errors import UsageError
from repro.runspec import RunRequest, resolve
from repro.stats import BINS_PER_DECADE, MagnitudeStats
from repro.sync import SyncPolicy
from repro.task import Batch, Task
from repro.trainer import TrainConfig, train


class NullProgress:
    def start_epoch(self, epoch, total): pass
    def advance(self, samples, text): pass
    def end_epoch(self, row): pass


class ToyTask(Task):
    metric_columns = ()
    eval_splits = final_splits = ()

    def __init__(self):
        self.model = torch.nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            self.model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        self.x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
        self.y = torch.tensor([[1.0], [-2.0]])

    def train_batches(self, epoch):
        yield Batch((self.x, self.y), samples=2)

    def training_loss(self, batch):
        x, y = batch.data
        loss = torch.nn.functional.mse_loss(self.model(x), y)
        return loss, loss

    def eval_sums(self, split):  # no evaluation splits: never called
        return torch.zeros(1)

    def eval_metrics(self, split, sums):
        return {}


def _train(multiplier=1.0, stats=None, lr=0.1):
    task = ToyTask()
    before = task.model.weight.detach().clone()
    opt = optim.make("sgd", task.model.parameters(), lr=lr)
    row = train(task, opt, SyncPolicy(), lambda e: 1.0, TrainConfig(epochs=1, loss_multiplier=multiplier, stats=stats),
                None, NullProgress(), torch.device("cpu"))
    return task.model.weight.detach() - before, row


def test_loss_multiplier_scales_the_gradient_but_not_the_logged_loss():
    step1, row1 = _train(1.0)
    step10, row10 = _train(10.0)
    assert torch.allclose(step10, 10 * step1) and step1.abs().sum() > 0
    assert row1["train_loss"] == row10["train_loss"]


def test_stats_histograms_put_sgd_updates_one_decade_below_the_gradients_for_lr_0_1():
    stats = MagnitudeStats([1, 3])
    _train(stats=stats, lr=0.1)
    assert stats.steps.tolist() == [1, 0]  # one step in epoch 1; epoch 3 never ran
    grad, update = stats.grad[0].numpy(), stats.update[0].numpy()
    assert grad.sum() == 3 and update.sum() == 3
    # |dx| = 0.1 |g|: the same counts, shifted down by one decade (allow a bin of rounding at bin edges)
    shifted = np.roll(update, BINS_PER_DECADE)
    assert np.abs(np.cumsum(shifted) - np.cumsum(grad)).max() <= 1


def test_loss_multiplier_and_log_stats_are_validated_and_recorded():
    spec = resolve(RunRequest(task="resnet20-cifar10", loss_multiplier=10, log_stats=[5, 1, 5]))
    assert spec["train"]["loss_multiplier"] == 10.0 and spec["train"]["log_stats"] == [1, 5]
    plain = resolve(RunRequest(task="resnet20-cifar10"))
    assert "loss_multiplier" not in plain["train"] and "log_stats" not in plain["train"]
    with pytest.raises(UsageError, match="loss-multiplier"):
        resolve(RunRequest(task="resnet20-cifar10", loss_multiplier=0))
    with pytest.raises(UsageError, match="log-stats"):
        resolve(RunRequest(task="resnet20-cifar10", log_stats=[0]))


def test_presets_give_each_optimizer_its_own_best_cell():
    l2 = resolve(RunRequest(task="resnet110-cifar10", preset="paper-x100", optimizer="adam-l2"))
    w = resolve(RunRequest(task="resnet110-cifar10", preset="paper-x100", optimizer="adamw"))
    assert l2["optimizer"]["hparams"] == {"lr": 1e-4, "weight_decay": 0.1}
    assert w["optimizer"]["hparams"] == {"lr": 5e-4, "weight_decay": 1e-4}
    assert w["train"]["loss_multiplier"] == 100.0 and w["task"]["options"]["bn"] is False
    user = resolve(RunRequest(task="resnet110-cifar10", preset="paper", optimizer="adamw", hparams={"lr": 1e-3}))
    assert user["optimizer"]["hparams"] == {"lr": 1e-3, "weight_decay": 1e-4}


def test_paper_preset_of_resnet56_is_celgcs_for_clipped_sgd_and_p2s_for_adam():
    # `repro run resnet56-cifar10 --preset paper --algo celgc`: P1's whole setting, not P2's with SGD in it.
    celgc = resolve(RunRequest(task="resnet56-cifar10", preset="paper", algo="celgc", sync_options={"interval": 8}))
    assert celgc["optimizer"] == {"name": "clipped-sgd", "hparams": {"lr": 0.3, "clip": 1.0, "momentum": 0.0,
                                                                     "weight_decay": 5e-4}}
    assert celgc["task"]["options"]["batch_size"] == 64 and celgc["task"]["options"]["bn"] is True
    assert celgc["schedule"] == {"name": "step", "options": {"milestones": (80, 120), "gamma": 0.1}}
    assert celgc["sync"] == {"name": "periodic", "options": {"interval": 8}}
    assert celgc["train"]["machines"] == 8 and celgc["train"]["epochs"] == 200
    baseline = resolve(RunRequest(task="resnet56-cifar10", preset="paper", algo="naive-parallel-clip"))
    assert baseline["sync"] == {"name": "every-step", "options": {}} and baseline["optimizer"] == celgc["optimizer"]
    adamw = resolve(RunRequest(task="resnet56-cifar10", preset="paper", optimizer="adamw"))
    assert adamw["task"]["options"]["bn"] is False and adamw["task"]["options"]["batch_size"] == 128
    assert adamw["schedule"]["name"] == "constant" and adamw["train"]["machines"] == 1
    scripts = resolve(RunRequest(task="resnet32-cifar10", preset="celgc-scripts", algo="celgc"))
    assert scripts["optimizer"]["hparams"]["lr"] == 0.1 and scripts["sync"]["options"] == {"interval": 2}


def test_quick_preset_keeps_bn_for_p1_algorithms():
    celgc = resolve(RunRequest(task="resnet20-cifar10", preset="quick", algo="celgc"))
    assert celgc["task"]["options"]["bn"] is True and celgc["train"]["machines"] == 4
    adam = resolve(RunRequest(task="resnet20-cifar10", preset="quick", optimizer="adam-l2"))
    assert adam["task"]["options"]["bn"] is False and adam["task"]["options"]["train_subset"] == 2000
