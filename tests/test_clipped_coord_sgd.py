"""Coordinate-wise clipped SGD (Pan & Li 2023) against steps computed by hand."""
import math

import pytest
import torch

from repro import optim
from repro.errors import UsageError


def _tensor(values):
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def test_one_global_threshold_over_all_groups_and_each_groups_lr():
    a, b, frozen = _tensor([1.0, 2.0, 3.0, 4.0]), _tensor([0.0, -1.0]), _tensor([7.0])
    opt = optim.make("clipped-coord-sgd", [{"params": [a, frozen]}, {"params": [b], "lr": 0.5}], lr=0.1,
                     fraction=0.3, momentum=0.0)
    a.grad = torch.tensor([0.5, -4.0, 1.0, 0.2], dtype=torch.float64)
    b.grad = torch.tensor([3.0, -0.1], dtype=torch.float64)
    opt.step()
    # N = 6 coordinates with a gradient, k = floor(0.3 * 6) = 1: tau = the 2nd largest |d| = 3.0, so -4 -> -3
    assert a.tolist() == pytest.approx([1.0 - 0.1 * 0.5, 2.0 + 0.1 * 3.0, 3.0 - 0.1 * 1.0, 4.0 - 0.1 * 0.2])
    assert b.tolist() == pytest.approx([0.0 - 0.5 * 3.0, -1.0 + 0.5 * 0.1])
    assert frozen.item() == 7.0
    assert opt.pop_metrics() == {"clip_fraction": pytest.approx(1 / 6)}
    assert math.isnan(opt.pop_metrics()["clip_fraction"])  # counters reset after each read


def reference(x, grads, lr, momentum, weight_decay, fraction, clip_buffer=False):
    """Plain-float steps; tau by sorting. ``clip_buffer`` is a wrong variant that clips the momentum in place."""
    x, buf = list(x), None
    for g in grads:
        d = [gi + weight_decay * xi for gi, xi in zip(g, x)]
        buf = d if buf is None else [momentum * bi + di for bi, di in zip(buf, d)]
        n = len(buf)
        k = min(n - 1, math.floor(fraction * n))
        tau = sorted(abs(v) for v in buf)[n - k - 1]
        clipped = [max(-tau, min(tau, v)) for v in buf]
        if clip_buffer:
            buf = clipped
        x = [xi - lr * ci for xi, ci in zip(x, clipped)]
    return x


X0 = [1.0, -1.0, 2.0, 0.0]
GRADS = [[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, -1.0, 0.0]]


def run(**hparams):
    p = _tensor(X0)
    opt = optim.make("clipped-coord-sgd", [p], **hparams)
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().tolist()


def test_momentum_is_clipped_as_the_update_and_kept_unclipped():
    ours = run(lr=0.1, momentum=0.5, weight_decay=0.1, fraction=0.25)
    # step 1: d = g + 0.1 x = [2.1, -0.1, -0.8, 0.5], k = 1, tau = 0.8; x1 = [0.92, -0.99, 2.08, -0.05]
    # step 2: buf = 0.5 * [2.1, -0.1, -0.8, 0.5] + (g + 0.1 x1) = [1.142, 0.851, -1.192, 0.245], tau = 1.142
    assert ours == pytest.approx([0.92 - 0.1142, -0.99 - 0.0851, 2.08 + 0.1142, -0.05 - 0.0245], rel=1e-12)
    assert ours == pytest.approx(reference(X0, GRADS, 0.1, 0.5, 0.1, 0.25), rel=1e-12)
    wrong = reference(X0, GRADS, 0.1, 0.5, 0.1, 0.25, clip_buffer=True)
    assert max(abs(a - b) for a, b in zip(ours, wrong)) > 1e-3


def test_threshold_is_global_not_per_parameter():
    a, b = _tensor([0.0, 0.0]), _tensor([0.0, 0.0])
    opt = optim.make("clipped-coord-sgd", [a, b], lr=1.0, fraction=0.25, momentum=0.0)
    a.grad, b.grad = torch.tensor([10.0, 1.0], dtype=torch.float64), torch.tensor([0.1, 0.2], dtype=torch.float64)
    opt.step()
    # global: N = 4, k = 1, tau = 1.0 clips the 10; per parameter (N = 2, k = 0) nothing would be clipped
    assert a.tolist() == [-1.0, -1.0]
    assert b.tolist() == pytest.approx([-0.1, -0.2])


def test_ties_at_the_threshold_are_not_counted_as_clipped():
    p = _tensor([0.0, 0.0, 0.0, 0.0])
    opt = optim.make("clipped-coord-sgd", [p], lr=1.0, fraction=0.25, momentum=0.0)
    p.grad = torch.tensor([3.0, -3.0, 3.0, 1.0], dtype=torch.float64)  # k = 1 but tau = 3 = the top magnitude
    opt.step()
    assert p.tolist() == [-3.0, 3.0, -3.0, -1.0]
    assert opt.pop_metrics() == {"clip_fraction": 0.0}


def test_fraction_one_clips_to_the_smallest_magnitude():
    p = _tensor([0.0, 0.0, 0.0])
    opt = optim.make("clipped-coord-sgd", [p], lr=1.0, fraction=1.0, momentum=0.0)
    p.grad = torch.tensor([2.0, -0.5, 1.0], dtype=torch.float64)
    opt.step()
    assert p.tolist() == [-0.5, 0.5, -0.5]
    assert opt.pop_metrics() == {"clip_fraction": pytest.approx(2 / 3)}


def test_fraction_zero_is_torch_sgd_with_momentum():
    torch.manual_seed(0)
    ours = torch.randn(5, 3, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_()
    opt_a = optim.make("clipped-coord-sgd", [ours], lr=0.05, fraction=0.0, momentum=0.9, weight_decay=0.01)
    opt_b = torch.optim.SGD([theirs], lr=0.05, momentum=0.9, weight_decay=0.01)
    for _ in range(4):
        g = torch.randn(5, 3)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    assert opt_a.pop_metrics() == {"clip_fraction": 0.0}


def test_clip_fraction_is_averaged_over_steps():
    p = _tensor([0.0, 0.0, 0.0, 0.0])
    opt = optim.make("clipped-coord-sgd", [p], lr=1.0, fraction=0.5, momentum=0.0)
    for g in ([4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]):  # 2 of 4 clipped, then 0 of 4 (all tie)
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    assert opt.pop_metrics() == {"clip_fraction": pytest.approx(0.25)}


def test_more_coordinates_than_torch_quantile_takes():
    n = 2 ** 24 + 8  # torch.quantile refuses inputs over 16M elements
    p = torch.nn.Parameter(torch.zeros(n))
    opt = optim.make("clipped-coord-sgd", [p], lr=0.1, fraction=5.5 / n, momentum=0.0)
    p.grad = torch.ones(n)
    p.grad[:5] = torch.tensor([100.0, 200.0, 300.0, 400.0, 500.0])
    opt.step()  # k = 5: tau = the 6th largest = 1, so the five large coordinates are clipped to 1
    assert torch.equal(p.detach(), torch.full((n,), -0.1))
    assert opt.pop_metrics()["clip_fraction"] == pytest.approx(5 / n)


def test_closure_runs_first_and_its_loss_is_returned():
    p = _tensor([2.0])
    opt = optim.make("clipped-coord-sgd", [p], lr=0.1, momentum=0.0)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 4.0
    assert p.item() == pytest.approx(2.0 - 0.1 * 4.0)  # one coordinate: k = 0, nothing clipped

def test_bad_values_are_usage_errors():
    p = [torch.zeros(1, requires_grad=True)]
    for bad in (-0.1, 1.5):
        with pytest.raises(UsageError, match="fraction must be in"):
            optim.make("clipped-coord-sgd", p, fraction=bad)
    with pytest.raises(UsageError, match="lr must be"):
        optim.make("clipped-coord-sgd", p, lr=-1.0)
    with pytest.raises(UsageError, match="does not take"):
        optim.make("clipped-coord-sgd", p, clip=1.0)
