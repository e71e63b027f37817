"""SGDOL: the stepsize recursion by hand, its invariants, the closure contract, and a real Fashion-MNIST run."""
import gzip
import json
import math
import struct

import pandas as pd
import pytest
import torch

from conftest import run_repro
from repro import optim
from repro.errors import UsageError


def scripted_closure(param, gradients):
    """A closure that hands out the given gradients one call at a time (the trainer's closure draws a
    fresh minibatch per call; here each call's 'minibatch' is the next scripted gradient)."""
    it = iter(gradients)
    calls = []

    def closure():
        param.grad = torch.tensor(next(it), dtype=torch.float32)
        calls.append(1)
        return torch.tensor(float(len(calls)))

    return closure, calls


def test_identical_gradients_keep_the_stepsize_at_one_over_m():
    # Full-batch least squares: both closure calls see the same data, so g == g' exactly.
    torch.manual_seed(0)
    a = torch.randn(50, 5)
    b = a @ torch.randn(5)  # consistent system: the minimum loss is 0
    w = torch.nn.Parameter(torch.zeros(5))
    opt = optim.make("sgdol", [w], smoothness=4.0, alpha=0.5)

    def closure():
        opt.zero_grad()
        loss = ((a @ w - b) ** 2).mean()
        loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(30)]
    assert opt.param_groups[0]["lr"] == 0.25
    assert losses[-1] < 0.01 * losses[0]  # and it is a working optimizer at that stepsize


def test_hand_computed_steps_global_stepsize():
    x = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = optim.make("sgdol", [x], smoothness=2.0, alpha=1.0)
    #          g_1      g'_1     g_2      g'_2     g_3      g'_3
    closure, calls = scripted_closure(x, [[1, 2], [3, 0], [3, 0], [3, 1], [0, 1], [0, -20]])
    assert opt.param_groups[0]["lr"] == 0.5  # eta_1 = 1/M
    loss = opt.step(closure)
    assert float(loss) == 1.0 and len(calls) == 2  # two gradients per step; the first call's loss returned
    # x_2 = x_1 - 0.5 g_1; S_ip = 1 + 3, S_sq = 1 + 5; eta_2 = 4 / (2 * 6)
    assert torch.allclose(x.data, torch.tensor([0.5, -2.0]))
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / 3)
    opt.step(closure)
    # x_3 = x_2 - (1/3) g_2; S_ip = 4 + 9, S_sq = 6 + 9; eta_3 = 13 / 30
    assert torch.allclose(x.data, torch.tensor([-0.5, -2.0]))
    assert opt.param_groups[0]["lr"] == pytest.approx(13 / 30)
    opt.step(closure)
    # x_4 = x_3 - (13/30) g_3; S_ip = 13 - 20 < 0, so eta_4 is clipped to 0
    assert torch.allclose(x.data, torch.tensor([-0.5, -2.0 - 13 / 30]))
    assert opt.param_groups[0]["lr"] == 0.0


def test_hand_computed_steps_per_coordinate_stepsize():
    x = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = optim.make("sgdol-coord", [x], smoothness=2.0, alpha=1.0)
    closure, _ = scripted_closure(x, [[1, 2], [3, 0], [3, 0], [3, 1]])
    opt.step(closure)
    # S_ip = [4, 1], S_sq = [2, 5]: eta = [4/4 -> clipped to 2/M = 1, 1/10]
    assert torch.allclose(x.data, torch.tensor([0.5, -2.0]))
    assert torch.allclose(opt.state[x]["eta"], torch.tensor([1.0, 0.1]))
    opt.step(closure)
    # x_3 = x_2 - eta * g_2; S_ip = [13, 1], S_sq = [11, 5]
    assert torch.allclose(x.data, torch.tensor([-2.5, -2.0]))
    assert torch.allclose(opt.state[x]["eta"], torch.tensor([13 / 22, 0.1]))
    assert opt.param_groups[0]["lr"] == pytest.approx((13 / 22 + 0.1) / 2)  # logged: the mean stepsize


def test_weight_decay_enters_both_gradients():
    x = torch.nn.Parameter(torch.tensor([2.0]))
    opt = optim.make("sgdol", [x], smoothness=1.0, alpha=1.0, weight_decay=0.5)
    closure, _ = scripted_closure(x, [[1.0], [3.0]])
    opt.step(closure)
    # both at x = 2: g = 1 + 0.5 * 2 = 2, g' = 3 + 1 = 4; x = 2 - 1 * 2; eta = (1 + 8) / (1 * (1 + 4))
    assert float(x.detach()) == 0.0 and opt.param_groups[0]["lr"] == pytest.approx(1.8)


@pytest.mark.parametrize("name", ["sgdol", "sgdol-coord"])
@pytest.mark.parametrize("smoothness", [0.5, 10.0, 300.0])
def test_stepsize_stays_within_zero_and_two_over_m(name, smoothness):
    gen = torch.Generator().manual_seed(int(smoothness * 10))
    x = torch.nn.Parameter(torch.zeros(7))
    opt = optim.make(name, [x], smoothness=smoothness, alpha=0.01)
    hit_zero = hit_top = False
    for t in range(300):
        scale = 10.0 ** float(torch.empty(()).uniform_(-2, 2, generator=gen))
        g = torch.randn(7, generator=gen) * scale
        # Strongly aligned pairs, then strongly opposed ones, then anything: both clipping bounds get hit.
        c = 3.0 if t < 60 else (-3.0 if t < 220 else float(torch.empty(()).uniform_(-3, 3, generator=gen)))
        g2 = c * g + torch.randn(7, generator=gen) * scale
        closure, _ = scripted_closure(x, [g.tolist(), g2.tolist()])
        opt.step(closure)
        etas = opt.state[x]["eta"] if name == "sgdol-coord" else torch.tensor([opt.param_groups[0]["lr"]], dtype=torch.float64)
        top = torch.tensor(2.0 / smoothness, dtype=etas.dtype)  # 2/M as stored in the stepsize's precision
        assert bool((etas >= 0).all()) and bool((etas <= top).all())
        hit_zero |= bool((etas == 0).any())
        hit_top |= bool((etas == top).any())
    assert hit_zero and hit_top  # the bounds were exercised, not just never approached


def test_step_without_closure_raises_a_clear_error():
    x = torch.nn.Parameter(torch.ones(3))
    opt = optim.make("sgdol", [x])
    x.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="two stochastic gradients.*closure"):
        opt.step()
    assert torch.equal(x.data, torch.ones(3))  # nothing moved


def test_registry_hparams_and_validation():
    x = torch.nn.Parameter(torch.ones(1))
    opt = optim.make("sgdol", [x], smoothness=10, alpha=10)
    assert optim.scaled_hparams(opt) == ()  # a schedule must not rescale a learned stepsize
    assert optim.accepted_hparams("sgdol") == {"smoothness", "alpha", "weight_decay"}
    with pytest.raises(UsageError, match="smoothness"):
        optim.make("sgdol", [x], smoothness=0.0)
    with pytest.raises(UsageError, match="lr"):
        optim.make("sgdol", [x], lr=0.1)


def test_idx_parser_reads_shape_and_rejects_truncation():
    from repro.data import DataError
    from repro.tasks.mnist import parse_idx

    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 2) + bytes(range(12))
    t = parse_idx(data)
    assert t.shape == (2, 3, 2) and t.dtype == torch.uint8 and int(t[1, 2, 1]) == 11
    with pytest.raises(DataError, match="truncated"):
        parse_idx(data[:-1])


@pytest.mark.slow
@pytest.mark.data
def test_corrupt_fashion_mnist_file_is_a_one_line_error(tmp_path, fashion_mnist_dir):
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).symlink_to(fashion_mnist_dir / name)
    labels = bytearray(gzip.decompress((fashion_mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # one wrong label
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    r = run_repro("run", "convnet-fashion-mnist", "--data-dir", tmp_path, "--out", tmp_path / "out", "--quiet")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "md5" in r.stderr and "train-labels-idx1-ubyte" in r.stderr


@pytest.mark.slow
@pytest.mark.data
def test_real_fashion_mnist_run_lowers_the_training_loss(tmp_path, fashion_mnist_dir):
    from repro.tasks.mnist import FashionMNISTConvNetTask

    task_options = dict(train_subset=1000, test_subset=500)
    # The loss of the run's initial weights: the worker seeds with the run's seed, then builds the task.
    torch.manual_seed(0)
    cls = FashionMNISTConvNetTask
    task = cls(cls.prepare(cls.parse_options(dict(data_dir=str(fashion_mnist_dir), **task_options))), 0, 1, torch.device("cpu"))
    task.model.eval()
    with torch.no_grad():
        sums = task.eval_sums("trainset")
    initial = float(sums[0] / sums[2])

    out = tmp_path / "results"
    sets = [a for k, v in task_options.items() for a in ("--set", f"{k}={v}")]
    r = run_repro("run", "convnet-fashion-mnist", "--preset", "quick", "--optimizer", "sgdol", "--epochs", 2,
                  "--max-steps", 10, *sets, "--data-dir", fashion_mnist_dir, "--quiet", "--out", out, timeout=240)
    assert r.returncode == 0, r.stderr
    (run_dir,) = (out / "convnet-fashion-mnist").iterdir()
    rows = pd.read_csv(run_dir / "metrics.csv")
    last = rows.iloc[-1]
    assert last["status"] == "done" and last["iteration"] == 10 and last["grad_evals"] == 20
    assert last["trainset_loss"] < initial - 0.2, (initial, last["trainset_loss"])
    assert math.isfinite(last["test_acc"]) and last["test_acc"] > 0.3
    assert 0.0 <= rows["lr"].min() and rows["lr"].max() <= 2 / 10 and last["lr"] != 0.1  # learned, in [0, 2/M]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["optimizer"]["name"] == "sgdol"
    assert config["optimizer"]["hparams"] == {"smoothness": 10.0, "alpha": 10.0, "weight_decay": 0.0}


def _fake_run(root, name, optimizer, hparams, final_loss, lrs=(0.1, 0.1), old_columns=False):
    """A run directory as `repro run` writes it, with made-up metrics; ``old_columns``: as runs before config
    version 2 named the whole-training-set pass (train_eval_loss, train_acc)."""
    d = root / "convnet-fashion-mnist" / name
    d.mkdir(parents=True)
    config = {"task": {"name": "convnet-fashion-mnist", "preset": "quick", "options": {}},
              "optimizer": {"name": optimizer, "hparams": hparams}, "world_size": 1}
    (d / "config.json").write_text(json.dumps(config))
    rows = pd.DataFrame({"epoch": [1.0, 2.0], "iteration": [30, 60], "grad_evals": [60, 120], "lr": list(lrs),
                         "train_loss": [1.0, 0.8], "trainset_loss": [1.5 * final_loss, final_loss],
                         "train_acc": [0.5, 0.6], "test_loss": [1.0, 0.9], "test_acc": [0.5, 1 - final_loss / 10],
                         "status": ["", "done"]})
    if old_columns:
        rows = rows.drop(columns="train_acc").rename(columns={"trainset_loss": "train_eval_loss"})
        rows["train_acc"] = [0.4, 0.5]
    rows.to_csv(d / "metrics.csv", index=False)
    (d / "summary.json").write_text("{}")


def test_sgdol_figure_picks_best_lr_per_baseline_and_paper_m_for_sgdol(tmp_path):
    from repro.figures.sgdol import draw

    with pytest.raises(UsageError, match="no SGDOL runs"):
        draw(tmp_path, tmp_path / "figures")
    _fake_run(tmp_path, "a", "sgdol", {"smoothness": 10.0, "alpha": 10.0}, 0.5, lrs=(0.08, 0.12))
    _fake_run(tmp_path, "b", "sgdol", {"smoothness": 1.0, "alpha": 10.0}, 0.3)  # better, but M=10 is the paper's
    _fake_run(tmp_path, "c", "sgd", {"lr": 0.1}, 0.4, old_columns=True)  # an old run still counts
    _fake_run(tmp_path, "d", "sgd", {"lr": 0.01}, 0.7)
    _fake_run(tmp_path, "e", "adam", {"lr": 0.001}, 0.6)
    paths = draw(tmp_path, tmp_path / "figures")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert {p.suffix for p in paths} == {".png", ".pdf", ".csv"} and len(paths) == 8
    best = pd.read_csv(tmp_path / "figures" / "sgdol_convnet-fashion-mnist_quick_N1.csv")
    assert sorted(zip(best["optimizer"], best["value"])) == [("adam", 0.001), ("sgd", 0.1), ("sgdol", 10.0)]
    every = pd.read_csv(tmp_path / "figures" / "sgdol_convnet-fashion-mnist_quick_N1_all.csv")
    assert len(every) == 5
