"""The trainer's --loss-multiplier and --log-stats, on a toy task in this process (no workers)."""
import numpy as np
import torch

from repro import optim
from repro.callbacks import GradientUpdateStats, LossMultiplier
from repro.config import TrainSettings
from repro.context import RunContext
from repro.stats import BINS_PER_DECADE, MagnitudeStats
from repro.sync import SyncPolicy
from repro.task import Batch, Task
from repro.trainer import train


class NullProgress:
    def start_epoch(self, epoch, total): pass
    def advance(self, samples, text): pass
    def end_epoch(self, row): pass


class ToyTask(Task):
    metric_columns = ()
    samples_per_epoch = 2
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
    callbacks = [LossMultiplier(multiplier)] if multiplier != 1.0 else []
    callbacks += [GradientUpdateStats(stats)] if stats is not None else []
    context = RunContext.build(0, 1, "cpu", 0)
    row = train(task, opt, SyncPolicy(context), lambda e: 1.0, TrainSettings(epochs=1), None, NullProgress(), context,
                callbacks)
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


def test_stats_also_keep_the_authors_view_of_the_first_step_in_base_2_bins(tmp_path):
    from repro.stats import LOG2_BINS, log2_counts

    assert LOG2_BINS[0] == -27 and LOG2_BINS[-1] == 13  # floor(log2 1e-8), floor(log2 1e4)
    counts = log2_counts(torch.tensor([0.0, 1e-12, 1.0, 1.5, -3.0, 1e9]))
    assert counts[0] == 2 and counts[27] == 2 and counts[28] == 1 and counts[-1] == 1 and counts.sum() == 6
    stats = MagnitudeStats([1])
    _train(stats=stats, lr=0.1)
    assert stats.first_grad[0].sum() == 3 and stats.first_update[0].sum() == 3
    stats.save(tmp_path / "stats.npz")
    saved = np.load(tmp_path / "stats.npz")
    assert saved["first_step_grad_counts"].shape == (1, 41) and saved["first_step_log2_bins"][0] == -27
