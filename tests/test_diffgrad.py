"""diffGrad against the paper's update written out by hand."""
import math

import pytest
import torch

from repro import optim
from repro.errors import UsageError

X0 = [1.0, -2.0, 0.5]
GRADS = [[0.5, -1.0, 3.0], [0.1, 2.0, -0.2], [0.1, 0.3, 0.05]]
LR, LAM = 0.1, 0.3
B1, B2 = 0.9, 0.999
EPS = 1e-3  # large, so that where eps enters shows in the result


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def reference(weight_decay=0.0, *, friction="change", eps_like_authors_code=False):
    """The paper's update one coordinate at a time in plain floats; the keyword flags give wrong variants."""
    out = []
    for i, x in enumerate(X0):
        m = v = previous = 0.0
        for t, grads in enumerate(GRADS, start=1):
            g = grads[i] + weight_decay * x
            m = B1 * m + (1 - B1) * g
            v = B2 * v + (1 - B2) * g * g
            xi = {"change": sigmoid(abs(previous - g)), "none": 1.0, "current": sigmoid(abs(g))}[friction]
            previous = g
            if eps_like_authors_code:
                x -= LR * math.sqrt(1 - B2 ** t) / (1 - B1 ** t) * xi * m / (math.sqrt(v) + EPS)
            else:
                x -= LR * xi * (m / (1 - B1 ** t)) / (math.sqrt(v / (1 - B2 ** t)) + EPS)
        out.append(x)
    return out


def run(**hparams):
    x = torch.tensor(X0, dtype=torch.float64, requires_grad=True)
    opt = optim.make("diffgrad", [x], lr=LR, eps=EPS, **hparams)
    for grads in GRADS:
        x.grad = torch.tensor(grads, dtype=torch.float64)
        opt.step()
    return x.detach().tolist()


@pytest.mark.parametrize("weight_decay", [0.0, LAM])
def test_three_steps_match_the_paper(weight_decay):
    assert run(weight_decay=weight_decay) == pytest.approx(reference(weight_decay), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("wrong", [dict(friction="none"), dict(friction="current"), dict(eps_like_authors_code=True),
                                   dict(weight_decay=LAM)], ids=["adam", "friction-of-g", "authors-eps", "decay"])
def test_wrong_variants_are_told_apart(wrong):
    ours, other = run(), reference(**wrong)
    assert max(abs(a - b) for a, b in zip(ours, other)) > 1e-6


def test_first_step_friction_is_sigmoid_of_gradient():
    # t = 1: m_hat = g, sqrt(v_hat) = |g|, so the step is lr * sigmoid(|g|) * sign(g) (eps = 1e-8 negligible)
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = optim.make("diffgrad", [x], lr=0.01)
    x.grad = torch.tensor([2.0, -0.5], dtype=torch.float64)
    opt.step()
    assert x.tolist() == pytest.approx([-0.01 * sigmoid(2.0), 0.01 * sigmoid(0.5)], rel=1e-7)


def test_previous_gradient_survives_in_place_zeroing():
    # zero_grad(set_to_none=False) zeroes p.grad in place; the stored g_{t-1} must not follow it
    x = torch.tensor(X0, dtype=torch.float64, requires_grad=True)
    opt = optim.make("diffgrad", [x], lr=LR, eps=EPS)
    x.grad = torch.zeros(3, dtype=torch.float64)
    for grads in GRADS:
        opt.zero_grad(set_to_none=False)
        x.grad.add_(torch.tensor(grads, dtype=torch.float64))
        opt.step()
    assert x.detach().tolist() == pytest.approx(reference(), rel=1e-12, abs=1e-14)


def test_param_groups_and_params_without_gradient():
    a = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    frozen = torch.nn.Parameter(torch.tensor([5.0], dtype=torch.float64))
    opt = optim.make("diffgrad", [{"params": [a, frozen]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = torch.tensor([1.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    opt.step()
    assert a.item() == pytest.approx(1.0 - 0.1 * sigmoid(1.0), rel=1e-7)
    assert b.item() == pytest.approx(3.0 + 0.5 * sigmoid(1.0), rel=1e-7)
    assert frozen.item() == 5.0 and frozen not in opt.state

def test_bad_values_are_usage_errors():
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(UsageError, match="beta1"):
        optim.make("diffgrad", p, beta1=-0.1)
    with pytest.raises(UsageError, match="weight_decay"):
        optim.make("diffgrad", p, weight_decay=-1.0)
    with pytest.raises(UsageError, match="does not take"):
        optim.make("diffgrad", p, decoupled=True)
