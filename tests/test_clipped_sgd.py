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


class _NoHostReads(torch.overrides.TorchFunctionMode):
    """Fails on any read of a tensor's value into Python (on a GPU, each drains the device's queue)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("__float__", "__int__", "__bool__", "__index__", "item", "tolist"):
            raise AssertionError(f"host read in the step: {func.__name__}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 5e-4)])
def test_step_never_reads_a_tensor_on_the_host_and_matches_the_formula(momentum, weight_decay):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    reference = [p.detach().clone() for p in model.parameters()]
    opt = optim.make("clipped-sgd", model.parameters(), lr=0.5, clip=0.05, momentum=momentum,
                     weight_decay=weight_decay)
    bufs = [torch.zeros_like(p) for p in reference]
    for i in range(3):
        x = torch.randn(16, 4)
        model.zero_grad()
        model(x).pow(2).mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        with _NoHostReads():
            opt.step()
        # the update written out in Python floats
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        eta = min(0.5, 0.05 / (norm + 1e-10))
        for k, (x0, g) in enumerate(zip(reference, grads)):
            d = g + weight_decay * x0
            bufs[k] = d if i == 0 or not momentum else momentum * bufs[k] + d
            reference[k] = x0 - eta * (bufs[k] if momentum else d)
    for p, r in zip(model.parameters(), reference):
        torch.testing.assert_close(p.detach(), r)
    assert opt.pop_metrics() == {"clip_fraction": 1.0}  # clip 0.05 binds on every step here


def test_cpu_step_is_bit_for_bit_the_scalar_update():
    """Runs made before the step size became a device tensor continue identically on a CPU."""
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(300, 7)), torch.nn.Parameter(torch.randn(11))]
    expected = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
    for x, p in zip(expected, params):
        x.add_(p.grad, alpha=-min(1.0, 0.25 / (norm + 1e-10)))
    optim.make("clipped-sgd", params, lr=1.0, clip=0.25).step()
    assert all(torch.equal(p.detach(), x) for p, x in zip(params, expected))
