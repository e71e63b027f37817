import math

import pytest
import torch

from repro import optim
from repro.errors import UsageError


def _two_params():
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([-1.0]))
    return a, b


def test_unclipped_branch_takes_plain_step_with_weight_decay():
    a, b = _two_params()
    opt = optim.make("clipped-sgd", [a, b], lr=0.1, clip=10.0, weight_decay=0.5)
    a.grad, b.grad = torch.tensor([0.3, 0.0]), torch.tensor([0.4])  # ||g|| = 0.5; clip/||g|| = 20 > lr
    opt.step()
    # d = g + 0.5 x; step = lr = 0.1
    assert torch.allclose(a.data, torch.tensor([1.0 - 0.1 * (0.3 + 0.5), 2.0 - 0.1 * (0.0 + 1.0)]))
    assert torch.allclose(b.data, torch.tensor([-1.0 - 0.1 * (0.4 - 0.5)]))
    assert opt.pop_metrics() == {"clip_fraction": 0.0}


def test_clipped_branch_uses_global_norm_of_raw_gradient():
    a, b = _two_params()
    opt = optim.make("clipped-sgd", [a, b], lr=1.0, clip=1.0, weight_decay=0.5)
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # ||g|| = 5 over all parameters
    opt.step()
    eta = 1.0 / 5.0  # min(1, 1/5); weight decay enters the direction, not the norm (authors' code)
    assert torch.allclose(a.data, torch.tensor([1.0 - eta * (3.0 + 0.5), 2.0 - eta * 1.0]))
    assert torch.allclose(b.data, torch.tensor([-1.0 - eta * (4.0 - 0.5)]))
    assert opt.pop_metrics() == {"clip_fraction": 1.0}
    assert math.isnan(opt.pop_metrics()["clip_fraction"])  # counters reset after each read


def test_momentum_accumulates_direction():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    opt = optim.make("clipped-sgd", [p], lr=0.5, clip=100.0, momentum=0.9)
    for _ in range(2):
        p.grad = torch.tensor([1.0])
        opt.step()
    # buf1 = 1, buf2 = 0.9 + 1 = 1.9; x = -0.5 - 0.95
    assert torch.allclose(p.data, torch.tensor([-1.45]))


def test_closure_is_called_and_its_loss_returned():
    p = torch.nn.Parameter(torch.tensor([2.0]))
    opt = optim.make("clipped-sgd", [p], lr=0.1, clip=1.0)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 4.0
    assert torch.allclose(p.data, torch.tensor([2.0 - 0.1 * 4.0]))  # min(lr=0.1, clip/||g||=0.25)

def test_make_rejects_unknown_names_and_bad_values():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(UsageError, match="unknown optimizer"):
        optim.make("nope", p)
    with pytest.raises(UsageError, match="does not take"):
        optim.make("sgd", p, clip=1.0)
    with pytest.raises(UsageError, match="lr must be"):
        optim.make("clipped-sgd", p, lr=-1.0)
