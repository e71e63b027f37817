"""AdamW-paper and CELGC-CIFAR figures drawn from run directories written here (no training needed)."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_repro
from repro.errors import UsageError
from repro.figures import FIGURES


def fake_run(results, name, optimizer, lr, lam, test_acc, *, diverged=False, mult=1.0, bn=False, world=1,
             sync=("none", {}), losses=(2.0, 1.5, 1.0), iterations=(10, 20, 30), complete=True):
    run_dir = results / "resnet20-cifar10" / name
    run_dir.mkdir(parents=True)
    train = {"epochs": 3, "machines": world, "seed": 0}
    if mult != 1.0:
        train["loss_multiplier"] = mult
    hparams = {"lr": lr} if optimizer in ("adam",) else {"lr": lr, "weight_decay": lam}
    if optimizer == "clipped-sgd":
        hparams = {"lr": lr, "clip": 1.0}
    config = {"task": {"name": "resnet20-cifar10", "preset": "quick", "options": {"bn": bn}},
              "optimizer": {"name": optimizer, "hparams": hparams}, "sync": {"name": sync[0], "options": sync[1]},
              "schedule": {"name": "constant", "options": {}}, "train": train, "world_size": world}
    (run_dir / "config.json").write_text(json.dumps(config))
    rows = [{"epoch": i + 1, "iteration": it, "wall_seconds": 5.0 * (i + 1), "train_loss": loss, "train_acc": 0.5,
             "test_loss": 1.0, "test_acc": test_acc, "comm_rounds": 0, "comm_bytes": 0, "status": ""}
            for i, (loss, it) in enumerate(zip(losses, iterations))]
    rows[-1]["status"] = "done"
    if diverged:
        rows[-1].update(train_loss=float("nan"), test_acc=None, test_loss=None, status="diverged")
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    if complete:
        (run_dir / "summary.json").write_text("{}")
    return run_dir


def test_heatmap_marks_best_cells_and_diverged_cells(tmp_path):
    results = tmp_path / "results"
    fake_run(results, "a", "adam-l2", 1e-3, 5e-4, 0.60)
    fake_run(results, "b", "adam-l2", 1e-3, 5e-5, 0.55)
    fake_run(results, "c", "adam-l2", 5e-3, 5e-4, 0.0, diverged=True)
    fake_run(results, "d", "adamw", 1e-3, 5e-5, 0.70)
    fake_run(results, "e", "adamw", 1e-3, 5e-4, 0.65)
    fake_run(results, "f", "adamw", 5e-3, 5e-5, 0.10, complete=False)  # still running: not a cell yet
    paths = FIGURES.get("adamw-heatmap")(results, tmp_path / "fig")
    names = {p.name for p in paths}
    stem = "resnet20-cifar10_quick_nobn_constant_e3_N1"
    assert {f"adamw-heatmap_{stem}.png", f"adamw-heatmap_{stem}.pdf", f"adamw-curves_{stem}.png"} <= names
    cells = pd.read_csv(tmp_path / "fig" / f"adamw-heatmap_{stem}.csv")
    assert len(cells) == 5 and cells["diverged"].sum() == 1
    from repro.figures.adamw import best_cells, cell_table
    from repro.results import load_runs

    best = best_cells(cell_table(load_runs(results))).set_index("optimizer")
    assert best.loc["adam-l2", "weight_decay"] == 5e-4 and best.loc["adamw", "weight_decay"] == 5e-5
    assert best.loc["adamw", "test_error"] == pytest.approx(0.30)


def test_loss_scale_figure_reports_each_multipliers_best_lambda(tmp_path):
    results = tmp_path / "results"
    for mult, l2_best in ((1.0, 5e-4), (10.0, 5e-3)):
        for lam in (5e-5, 5e-4, 5e-3):
            fake_run(results, f"l2-{mult}-{lam}", "adam-l2", 1e-3, lam, 0.7 if lam == l2_best else 0.5, mult=mult)
            fake_run(results, f"w-{mult}-{lam}", "adamw", 1e-3, lam, 0.7 if lam == 5e-5 else 0.5, mult=mult)
    # A step size run only at x1 is left out, or x1's curve would be the best over more cells than x10's.
    fake_run(results, "l2-only-x1", "adam-l2", 5e-3, 5e-5, 0.9)
    paths = FIGURES.get("adamw-loss-scale")(results, tmp_path / "fig")
    table = pd.read_csv([p for p in paths if p.suffix == ".csv"][0])
    assert set(table["best_lr"]) == {1e-3}
    best = {(r.optimizer, r.loss_multiplier): r.best_weight_decay for r in table.itertuples()}
    assert best == {("adam-l2", 1.0): 5e-4, ("adam-l2", 10.0): 5e-3, ("adamw", 1.0): 5e-5, ("adamw", 10.0): 5e-5}
    assert set(table["n"]) == {1} and table["test_error_std"].isna().all()  # each best cell's seeds, drawn as bars


def test_histograms_need_stats_and_draw_them(tmp_path):
    results = tmp_path / "results"
    run_dir = fake_run(results, "a", "adamw", 1e-3, 5e-5, 0.6)
    with pytest.raises(UsageError, match="--log-stats"):
        FIGURES.get("adamw-histograms")(results, tmp_path / "fig")
    edges = np.linspace(-20, 4, 97)
    counts = np.zeros((2, 96))
    counts[0, 40], counts[1, 50] = 10, 10
    np.savez(run_dir / "stats.npz", epochs=np.array([1, 3]), edges=edges, grad_counts=counts, update_counts=counts,
             grad_zeros=np.zeros(2), update_zeros=np.zeros(2), steps=np.array([1, 1]))
    paths = FIGURES.get("adamw-histograms")(results, tmp_path / "fig")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)


def test_celgc_cifar_and_speedup_figures(tmp_path):
    results = tmp_path / "results"
    fake_run(results, "i2", "clipped-sgd", 0.1, 0, 0.6, world=4, sync=("periodic", {"interval": 2}))
    fake_run(results, "every", "clipped-sgd", 0.1, 0, 0.62, world=4, sync=("every-step", {}))
    fake_run(results, "one", "clipped-sgd", 0.1, 0, 0.5, world=1, sync=("periodic", {"interval": 2}),
             losses=(2.0, 1.5, 1.2), iterations=(40, 80, 120))
    paths = FIGURES.get("celgc-cifar")(results, tmp_path / "fig")
    table = pd.read_csv(tmp_path / "fig" / "celgc-cifar_resnet20-cifar10_quick_N4.csv")
    assert list(table["curve"]) == ["every-step (naive parallel)", "I=2"]
    assert any(p.name == "celgc-cifar_resnet20-cifar10_quick_N1.png" for p in paths)
    paths = FIGURES.get("celgc-speedup")(results, tmp_path / "fig")
    speed = pd.read_csv([p for p in paths if p.suffix == ".csv"][0]).set_index("world_size")
    # target = 1.2 (the worst final loss); an epoch's running loss sits at mid-epoch: N=1 reaches it at iteration
    # 100 (80..120); N=4 passes it between 15 (1.5) and 25 (1.0), at 15 + 10 * 0.3 / 0.5 = 21 -> speed-up 100 / 21
    assert speed.loc[4, "iterations_to_target"] == pytest.approx(21.0)
    assert speed.loc[4, "speedup_vs_N1"] == pytest.approx(100 / 21)


@pytest.mark.slow
def test_plot_cli_without_runs_says_what_to_do(tmp_path):
    (tmp_path / "results").mkdir()
    r = run_repro("plot", "adamw-heatmap", "--results", tmp_path / "results")
    assert r.returncode == 2 and "no Adam-family" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_celgc_cifar_uses_the_whole_training_set_loss_when_every_run_scored_it(tmp_path):
    results = tmp_path / "results"
    for name, sync in (("every", ("every-step", {})), ("i4", ("periodic", {"interval": 4}))):
        run = fake_run(results, name, "clipped-sgd", 0.1, 0.0, 0.5, world=2, sync=sync)
        metrics = pd.read_csv(run / "metrics.csv")
        metrics["trainset_loss"] = metrics["train_loss"] * 0.9
        metrics.to_csv(run / "metrics.csv", index=False)
    paths = FIGURES.get("celgc-cifar")(results, tmp_path / "fig")
    (csv,) = [p for p in paths if p.suffix == ".csv"]
    assert "trainset_loss" in pd.read_csv(csv).columns
    (results / "resnet20-cifar10" / "i4" / "metrics.csv").write_text(
        pd.read_csv(results / "resnet20-cifar10" / "i4" / "metrics.csv").drop(columns="trainset_loss").to_csv(index=False))
    paths = FIGURES.get("celgc-cifar")(results, tmp_path / "fig2")  # one run without it: the running loss for all
    (csv,) = [p for p in paths if p.suffix == ".csv"]
    assert "train_loss" in pd.read_csv(csv).columns and "trainset_loss" not in pd.read_csv(csv).columns
