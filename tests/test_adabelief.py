"""AdaBelief against Algorithm 1 written out by hand, with and without a step-size schedule and weight decay."""
import math

import pytest
import torch

from repro import optim
from repro.errors import UsageError

X0 = [1.0, -2.0, 0.5]
GRADS = [[0.5, -1.0, 3.0], [0.1, 2.0, -0.2], [-0.4, 0.3, 0.05]]
LR0, LAM = 0.1, 0.3
B1, B2 = 0.9, 0.999
EPS = 1e-3  # large, so that where eps enters (inside s_t and outside the square root) shows in the result


def reference(lr_factors, decay=None, *, eps_in_state=True, residual_with_new_mean=True, belief=True):
    """Algorithm 1 one coordinate at a time in plain floats; the keyword flags give wrong variants."""
    out = []
    for i, x in enumerate(X0):
        m = s = 0.0
        for t, (grads, factor) in enumerate(zip(GRADS, lr_factors), start=1):
            lr, g = LR0 * factor, grads[i]
            if decay == "decoupled":
                x *= 1 - LAM * lr / LR0
            elif decay == "l2":
                g += LAM * x
            m_old, m = m, B1 * m + (1 - B1) * g
            residual = (g - (m if residual_with_new_mean else m_old)) if belief else g
            s = B2 * s + (1 - B2) * residual ** 2 + (EPS if eps_in_state else 0.0)
            x -= lr * (m / (1 - B1 ** t)) / (math.sqrt(s / (1 - B2 ** t)) + EPS)
        out.append(x)
    return out


def run(lr_factors, **hparams):
    x = torch.tensor(X0, dtype=torch.float64, requires_grad=True)
    opt = optim.make("adabelief", [x], lr=LR0, eps=EPS, **hparams)
    for grads, factor in zip(GRADS, lr_factors):
        for group in opt.param_groups:  # what the trainer's schedule does each epoch
            group["lr"] = group["initial_lr"] * factor
        x.grad = torch.tensor(grads, dtype=torch.float64)
        opt.step()
    return x.detach().tolist()


FACTORS = {"constant": [1.0, 1.0, 1.0], "scheduled": [1.0, 0.5, 0.1]}


@pytest.mark.parametrize("factors", FACTORS.values(), ids=FACTORS.keys())
@pytest.mark.parametrize("decay", [None, "decoupled", "l2"])
def test_three_steps_match_algorithm_1(decay, factors):
    hparams = {} if decay is None else {"weight_decay": LAM, "decoupled": decay == "decoupled"}
    assert run(factors, **hparams) == pytest.approx(reference(factors, decay), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("wrong", [dict(eps_in_state=False), dict(residual_with_new_mean=False), dict(belief=False),
                                   dict(decay="l2"), dict(decay="decoupled")],
                         ids=["eps-only-outside", "residual-old-mean", "adam-second-moment", "l2", "decoupled"])
def test_wrong_variants_are_told_apart(wrong):
    ours = run(FACTORS["scheduled"])  # no decay
    other = reference(FACTORS["scheduled"], **wrong)
    assert max(abs(a - b) for a, b in zip(ours, other)) > 1e-6


def test_first_step_is_lr_over_beta1_times_sign_for_tiny_eps():
    # m_1 = (1-b1) g, g - m_1 = b1 g, s_hat ~ b1^2 g^2: the first step is lr / b1 per coordinate
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = optim.make("adabelief", [x], lr=0.01)
    x.grad = torch.tensor([2.0, -0.5, 1e-3], dtype=torch.float64)
    opt.step()
    assert x.tolist() == pytest.approx([-0.01 / B1, 0.01 / B1, -0.01 / B1], rel=1e-6)


def test_param_groups_and_params_without_gradient():
    a = torch.nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    frozen = torch.nn.Parameter(torch.tensor([5.0], dtype=torch.float64))
    opt = optim.make("adabelief", [{"params": [a, frozen]}, {"params": [b], "lr": 0.5, "weight_decay": 0.0}],
                     lr=0.1, weight_decay=0.2)
    a.grad, b.grad = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    opt.step()
    # first step: x * (1 - 0.2) for a (decoupled, lr_t = lr_0), then -lr * g / (b1 |g|) (eps = 1e-16 negligible)
    assert a.tolist() == pytest.approx([0.8 - 0.1 / B1, -0.8 - 0.1 / B1], rel=1e-12)
    assert b.tolist() == pytest.approx([3.0 + 0.5 / B1], rel=1e-12)
    assert frozen.item() == 5.0 and frozen not in opt.state

def test_defaults_and_bad_values():
    assert optim.accepted_hparams("adabelief") == {"lr", "beta1", "beta2", "eps", "weight_decay", "decoupled"}
    from repro.registry import builder_defaults
    assert builder_defaults(optim.OPTIMIZERS.get("adabelief"))["eps"] == 1e-16
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(UsageError, match="beta2"):
        optim.make("adabelief", p, beta2=1.0)
    with pytest.raises(UsageError, match="eps"):
        optim.make("adabelief", p, eps=-1e-8)
    with pytest.raises(UsageError, match="decoupled"):
        optim.make("adabelief", p, decoupled="yes")
    with pytest.raises(UsageError, match="does not take"):
        optim.make("adabelief", p, rectify=True)
