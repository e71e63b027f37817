"""The best-test-error-vs-depth figure (P2): best setting per network and optimizer, mean and std over seeds."""
import json

import pandas as pd
import pytest

from repro.errors import UsageError
from repro.figures import FIGURES
from repro.figures.adamw_depth import best_by_depth


def _run(results, depth, optimizer, lr, lam, seed, test_acc, bn=False):
    task = f"resnet{depth}-cifar10"
    run_dir = results / task / f"{optimizer}_{lr}_{lam}_{bn}_{seed}"
    run_dir.mkdir(parents=True)
    config = {"task": {"name": task, "preset": "quick", "options": {"bn": bn}},
              "optimizer": {"name": optimizer, "hparams": {"lr": lr, "weight_decay": lam}},
              "sync": {"name": "none", "options": {}}, "schedule": {"name": "constant", "options": {}},
              "train": {"epochs": 2, "machines": 1, "seed": seed}, "world_size": 1}
    (run_dir / "config.json").write_text(json.dumps(config))
    pd.DataFrame([{"epoch": 1, "train_loss": 1.0, "test_acc": 0.1, "status": ""},
                  {"epoch": 2, "train_loss": 0.5, "test_acc": test_acc, "status": "done"}]).to_csv(
        run_dir / "metrics.csv", index=False)
    (run_dir / "summary.json").write_text("{}")


def test_best_setting_per_depth_with_mean_std_and_n(tmp_path):
    results = tmp_path / "results"
    for seed, (good, bad) in enumerate([(0.80, 0.50), (0.70, 0.52)]):
        _run(results, 20, "adamw", 1e-3, 5e-5, seed, good)
        _run(results, 20, "adamw", 1e-3, 5e-3, seed, bad)
        _run(results, 56, "adamw", 5e-4, 5e-5, seed, good - 0.1)
        _run(results, 20, "adam-l2", 1e-3, 5e-4, seed, 0.6, bn=True)
    table = best_by_depth(results)
    row = table[(table.depth == 20) & (table.optimizer == "adamw") & ~table.bn].iloc[0]
    assert row["weight_decay"] == 5e-5 and row["n"] == 2
    assert row["mean"] == pytest.approx(25.0) and row["std"] == pytest.approx(7.0710678)  # errors 20 and 30 %
    assert table[(table.depth == 56)].iloc[0]["mean"] == pytest.approx(35.0)
    assert sorted(table["bn"].unique()) == [False, True]
    paths = FIGURES.get("adamw-depth")(results, tmp_path / "fig")
    assert {p.name for p in paths} == {"adamw-depth.png", "adamw-depth.pdf", "adamw-depth.csv"}


def test_no_runs_is_a_one_line_error(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(UsageError, match="no complete Adam-family ResNet runs"):
        FIGURES.get("adamw-depth")(tmp_path / "results", tmp_path / "fig")
