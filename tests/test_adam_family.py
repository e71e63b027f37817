"""Adam-family optimizers against a hand-computed two-step update, with and without a step-size schedule."""
import math

import pytest
import torch

from repro import optim
from repro.errors import UsageError

X0 = [1.0, -2.0, 0.5]
GRADS = [[0.5, -1.0, 3.0], [0.1, 2.0, -0.2]]
LR0, LAM = 0.1, 0.3
B1, B2, EPS = 0.9, 0.999, 1e-8


def reference(kind: str, lr_factors: list[float]) -> list[float]:
    """The paper's updates written out in plain Python floats, one coordinate at a time."""
    out = []
    for i, x in enumerate(X0):
        m = v = acc = 0.0
        for t, (grads, factor) in enumerate(zip(GRADS, lr_factors), start=1):
            lr = LR0 * factor
            g = grads[i]
            if kind == "adagrad":
                acc += g * g
                x -= lr * g / (math.sqrt(acc) + 1e-10)
                continue
            if kind == "adam-l2":
                g += LAM * x
            if kind == "adamw":
                x *= 1 - LAM * lr / LR0
            m = B1 * m + (1 - B1) * g
            v = B2 * v + (1 - B2) * g * g
            x -= lr * (m / (1 - B1 ** t)) / (math.sqrt(v) / math.sqrt(1 - B2 ** t) + EPS)
            if kind == "adamprox":
                x /= 1 + LAM * lr / LR0
        out.append(x)
    return out


def run(name: str, lr_factors: list[float], **hparams) -> list[float]:
    x = torch.tensor(X0, dtype=torch.float64, requires_grad=True)
    opt = optim.make(name, [x], lr=LR0, **hparams)
    for group in opt.param_groups:  # what the trainer does before training
        group.setdefault("initial_lr", group["lr"])
    for grads, factor in zip(GRADS, lr_factors):
        for group in opt.param_groups:  # and what it does at each scheduled epoch
            group["lr"] = group["initial_lr"] * factor
        x.grad = torch.tensor(grads, dtype=torch.float64)
        opt.step()
    return x.detach().tolist()


@pytest.mark.parametrize("factors", [[1.0, 1.0], [1.0, 0.1]], ids=["constant", "scheduled"])
@pytest.mark.parametrize("name", ["adam", "adam-l2", "adamw", "adamprox"])
def test_two_steps_match_hand_computation(name, factors):
    hparams = {} if name == "adam" else {"weight_decay": LAM}
    assert run(name, factors, **hparams) == pytest.approx(reference(name, factors), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("factors", [[1.0, 1.0], [1.0, 0.1]], ids=["constant", "scheduled"])
def test_adagrad_two_steps(factors):
    assert run("adagrad", factors) == pytest.approx(reference("adagrad", factors), rel=1e-12)


def test_decay_variants_differ_from_each_other_and_from_adam():
    finals = {n: run(n, [1.0, 1.0], weight_decay=LAM) for n in ("adam-l2", "adamw", "adamprox")}
    finals["adam"] = run("adam", [1.0, 1.0])
    values = [tuple(round(v, 9) for v in f) for f in finals.values()]
    assert len(set(values)) == 4


def test_adamw_with_constant_lr_is_torch_adamw_with_lambda_over_lr():
    torch.manual_seed(0)
    model_a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    model_b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    model_b.load_state_dict(model_a.state_dict())
    lr, lam = 5e-3, 5e-4
    ours = optim.make("adamw", model_a.parameters(), lr=lr, weight_decay=lam)
    theirs = torch.optim.AdamW(model_b.parameters(), lr=lr, weight_decay=lam / lr)
    data = torch.randn(6, 8, 4), torch.randn(6, 8, 1)
    for x, y in zip(*data):
        for model, opt in ((model_a, ours), (model_b, theirs)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)


def test_adamprox_uses_initial_lr_from_a_torch_scheduler():
    x = torch.tensor([2.0], requires_grad=True)
    opt = optim.make("adamprox", [x], lr=0.5, weight_decay=0.2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x.grad = torch.tensor([0.0])  # zero gradient: Adam leaves x alone, only the proximal map acts
    opt.step()
    sched.step()
    opt.step()
    assert x.item() == pytest.approx(2.0 / (1 + 0.2) / (1 + 0.2 * 0.5))


def test_bad_betas_and_unknown_hparams_are_usage_errors():
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(UsageError, match="beta1"):
        optim.make("adamw", p, beta1=1.0)
    with pytest.raises(UsageError, match="momentum"):
        optim.make("adam", p, momentum=0.9)
    with pytest.raises(UsageError, match="weight_decay"):
        optim.make("adamprox", p, weight_decay=-1.0)
