"""`--param-groups no-decay-bias-norm`: no weight decay on biases and normalization layers, for every optimizer
that decays."""
import pytest
import torch

from repro import optim


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    with torch.no_grad():
        for p in model.parameters():  # BatchNorm's bias starts at 0, which no decay could move
            p.copy_(torch.randn_like(p))
    return model


# Every registered optimizer that decays (a new one is covered automatically); SGDOL needs a closure per step and
# learns its own step size (no lr), so it is tested in tests/test_sgdol.py.
DECAYING = [n for n in optim.OPTIMIZERS.names()
            if {"lr", "weight_decay"} <= optim.accepted_hparams(n) and not n.startswith("sgdol")]
VARIANTS = [(n, {}) for n in DECAYING] + [("adabelief", {"decoupled": False})]


@pytest.mark.parametrize("name, extra", VARIANTS)
@pytest.mark.parametrize("mode", ["all", "no-decay-bias-norm"])
def test_only_matrices_decay_when_asked(name, extra, mode):
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = optim.make(name, optim.param_groups(model, mode), lr=0.1, weight_decay=0.1, **extra)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # only the decay can move a parameter
    opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == (p.dim() > 1 or mode == "all"), (n, moved)


def test_unknown_mode_is_rejected():
    from repro.errors import UsageError

    with pytest.raises(UsageError, match="param-groups"):
        optim.param_groups(_model(), "odd")
