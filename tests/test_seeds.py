"""Runs that differ only in their seed: mean, std and n per evaluation and per setting, the figures' bands and
heat-map cells, and `repro summarize` (run folders with real config.json contents written here; no training)."""
import json
import math
import sys

import pandas as pd
import pytest

from conftest import run_repro
from repro.figures import FIGURES
from repro.results import by_setting, load_runs
from repro.runspec import RunRequest, resolve

NAN = float("nan")


def write_run(results, name, seed, val_ppl, *, interval=2, complete=True, wall=(1.0, 2.0)):
    """A 2-worker lstm-text CELGC run (every-step when interval is None) with two evaluation rows."""
    sync = {"sync": "every-step"} if interval is None else {"sync_options": {"interval": interval}}
    config = resolve(RunRequest(task="lstm-text", algo="celgc", train={"seed": seed, "machines": 2}, **sync))
    run = results / "lstm-text" / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({**config.to_dict(), "world_size": 2}))
    rows = len(val_ppl)
    pd.DataFrame({"epoch": [1.0, 2.0][:rows], "iteration": [10, 20][:rows], "wall_seconds": list(wall)[:rows],
                  "train_loss": [5.0, 4.0][:rows], "val_ppl": val_ppl, "test_ppl": [NAN, val_ppl[-1] + 1][:rows],
                  "comm_rounds": [5, 10][:rows], "comm_bytes": [100, 200][:rows], "status": ["", "done"][:rows],
                  }).to_csv(run / "metrics.csv", index=False)
    if complete:
        (run / "summary.json").write_text("{}")


def three_seeds(results):
    # val_ppl, epoch 1: 201, 203, 208 -> mean 204, deviations -3, -1, 4 -> std sqrt((9 + 1 + 16) / 2) = sqrt(13)
    #          epoch 2: 100, 110, 120 -> mean 110, std sqrt((100 + 0 + 100) / 2) = 10
    for seed, ppl, wall in ((0, (201, 100), (1, 2)), (1, (203, 110), (3, 4)), (2, (208, 120), (5, 9))):
        write_run(results, f"i2-s{seed}", seed, list(ppl), wall=wall)
    write_run(results, "every", 0, [300.0, 150.0], interval=None)  # another setting, one seed


def test_curve_and_finals_are_mean_std_and_n_over_the_seeds_of_a_setting(tmp_path):
    from repro.seeds import curve, final_stats

    three_seeds(tmp_path)
    write_run(tmp_path, "i2-s3-partial", 3, [250.0], complete=False)  # still running: one row so far
    groups = by_setting(load_runs(tmp_path))
    seeds = next(g for g in groups.values() if len(g) == 4)
    assert [r.seed for r in seeds] == [0, 1, 2, 3]
    c = curve(seeds, "wall_seconds", "val_ppl")
    # rows aligned by evaluation, x = the mean wall time; the partial seed counts only in its one row
    assert c["wall_seconds"].tolist() == pytest.approx([(1 + 3 + 5 + 1) / 4, (2 + 4 + 9) / 3])
    assert c["n"].tolist() == [4, 3]
    assert c["mean"].tolist() == pytest.approx([(201 + 203 + 208 + 250) / 4, 110.0])
    assert c["std"].iloc[1] == pytest.approx(10.0)
    c = curve(seeds[:3], "epoch", "val_ppl")
    assert c["mean"].tolist() == pytest.approx([204.0, 110.0]) and c["std"].tolist() == pytest.approx([math.sqrt(13), 10])
    assert curve(seeds[:3], "epoch", "test_ppl")["n"].tolist() == [3]  # test_ppl only on the last row

    finals = final_stats(seeds[:3])
    assert finals["val_ppl"] == pytest.approx((110.0, 10.0, 3))
    assert finals["test_ppl"] == pytest.approx((111.0, 10.0, 3))
    assert finals["train_loss"] == pytest.approx((4.0, 0.0, 3))
    assert "comm_rounds" not in finals and "epoch" not in finals  # bookkeeping, not a metric
    (single,) = [g for g in groups.values() if len(g) == 1]
    mean, std, n = final_stats(single)["val_ppl"]
    assert (mean, n) == (150.0, 1) and math.isnan(std)  # one seed: no spread, not a spread of 0


def test_curve_figure_draws_a_band_per_setting_with_n_in_the_legend(tmp_path, monkeypatch):
    import repro.figures._curves as curves

    three_seeds(tmp_path / "results")
    write_run(tmp_path / "results", "i2-s3-partial", 3, [250.0], complete=False)  # left out: seeds 0-2 completed
    drawn = []

    def spy(fig, stem):  # the legend and the shaded bands, read before the figure is closed
        ax = fig.axes[0]
        drawn.append(([t.get_text() for t in ax.get_legend().get_texts()], len(ax.collections)))
        return save(fig, stem)

    save = curves.save_figure
    monkeypatch.setattr(curves, "save_figure", spy)
    paths = FIGURES.get("celgc-lm")(tmp_path / "results", tmp_path / "fig")
    assert {p.name for p in paths} == {f"celgc-lm_lstm-text_quick_N2.{ext}" for ext in ("png", "pdf", "csv")}
    assert all(p.stat().st_size > 0 for p in paths)
    (labels, bands), = drawn
    assert labels == ["every-step (naive parallel) (n=1)", "I=2 (n=3)"]
    assert bands == 1  # a band for the three seeds, none for the single one
    table = pd.read_csv(tmp_path / "fig" / "celgc-lm_lstm-text_quick_N2.csv").set_index("curve")
    assert table.loc["I=2", "val_ppl"] == pytest.approx(110.0) and table.loc["I=2", "val_ppl_std"] == pytest.approx(10.0)
    assert table.loc["I=2", "val_ppl_n"] == 3 and table.loc["I=2", "wall_seconds"] == pytest.approx(5.0)


def test_heatmap_cell_is_the_mean_over_seeds_with_std_and_n(tmp_path, monkeypatch):
    import repro.figures.adamw as adamw

    results = tmp_path / "results"

    def cell(name, seed, lr, acc, diverged=False):
        config = resolve(RunRequest(task="resnet20-cifar10", optimizer="adamw", hparams={"lr": lr, "weight_decay": 5e-4},
                                    task_options={"bn": False}, train={"seed": seed}))
        run = results / "resnet20-cifar10" / name
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({**config.to_dict(), "world_size": 1}))
        pd.DataFrame({"epoch": [1.0, 2.0], "train_loss": [2.0, 1.0], "test_acc": [0.5, NAN if diverged else acc],
                      "status": ["", "diverged" if diverged else "done"]}).to_csv(run / "metrics.csv", index=False)
        (run / "summary.json").write_text("{}")

    for seed, acc in ((0, 0.70), (1, 0.72), (2, 0.74)):  # test error 30, 28, 26 % -> mean 28, std 2
        cell(f"a{seed}", seed, 1e-3, acc)
    cell("b0", 0, 1e-2, 0.60)
    cell("b1", 1, 1e-2, 0.0, diverged=True)
    texts = []
    monkeypatch.setattr(adamw, "save_figure", lambda fig, stem: texts.extend(
        t.get_text() for ax in fig.axes for t in ax.texts) or [stem.with_suffix(".png")])
    adamw.draw_heatmaps(results, tmp_path / "fig")
    cells = pd.read_csv(next((tmp_path / "fig").glob("adamw-heatmap_*.csv"))).set_index("lr")
    assert cells.loc[1e-3, "test_error"] == pytest.approx(0.28) and cells.loc[1e-3, "test_error_std"] == pytest.approx(0.02)
    assert cells.loc[1e-3, "n"] == 3 and cells.loc[1e-2, "n"] == 1 and cells.loc[1e-2, "n_diverged"] == 1
    assert not cells["diverged"].any()  # one seed of 1e-2 finished
    assert "28.0\n±2.0 n=3" in texts and "40.0\n+1 div." in texts


def _summarize_in_process(monkeypatch, *args):
    """The command's exit code (``cli._main``: ``main`` itself would end this process, see process_exit)."""
    from repro.cli import _main

    monkeypatch.setattr(sys, "argv", ["repro", "summarize", *map(str, args)])
    return _main()


def test_summarize_writes_mean_std_n_per_setting_as_csv_markdown_and_latex(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    three_seeds(results)
    write_run(results, "i2-s3-partial", 3, [250.0], complete=False)  # left out, and said so
    assert _summarize_in_process(monkeypatch, results, "--out", tmp_path / "table") == 0
    printed = capsys.readouterr().out
    assert "left out 1 incomplete run" in printed and str(tmp_path / "table" / "summary.tex") in printed
    table = pd.read_csv(tmp_path / "table" / "summary.csv").set_index("sync")
    assert list(table.index) == ["every-step", "periodic"]
    i2 = table.loc["periodic"]
    assert (i2["task"], i2["optimizer"], i2["interval"], i2["world_size"], i2["seeds"]) == ("lstm-text", "clipped-sgd", 2, 2, "0 1 2")
    assert (i2["lr"], i2["clip"], i2["preset"], i2["recipe"], i2["epochs"]) == (20.0, 5.0, "quick", "celgc-lm-quick", 6)
    assert (i2["val_ppl_mean"], i2["val_ppl_std"], i2["val_ppl_n"]) == pytest.approx((110.0, 10.0, 3))
    assert (i2["test_ppl_mean"], i2["test_ppl_n"]) == pytest.approx((111.0, 3))
    assert math.isnan(table.loc["every-step", "val_ppl_std"]) and table.loc["every-step", "val_ppl_n"] == 1
    markdown = (tmp_path / "table" / "summary.md").read_text().splitlines()
    assert markdown[0].startswith("| task |") and len(markdown) == 4
    assert "| 110 ± 10 |" in markdown[3] and "| 150 |" in markdown[2]
    latex = (tmp_path / "table" / "summary.tex").read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex and "110 $\\pm$ 10" in latex and "val\\_ppl" in latex

    # filters: another task has no runs
    assert _summarize_in_process(monkeypatch, results, "--task", "lstm-ptb") == 2
    assert capsys.readouterr().err.strip() == (f"repro: error: no runs of task lstm-ptb under {results}: "
                                               "run e.g. `repro run TASK --seed 1` (and --seed 2, 3) first")


@pytest.mark.slow
def test_summarize_cli_writes_three_files_and_fails_in_one_line_without_runs(tmp_path):
    results = tmp_path / "results"
    three_seeds(results)
    r = run_repro("summarize", results)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith(str(results))] == \
        [str(results / f"summary.{ext}") for ext in ("csv", "md", "tex")]
    table = pd.read_csv(results / "summary.csv")
    assert sorted(table["val_ppl_n"]) == [1, 3] and table["val_ppl_mean"].max() == pytest.approx(150.0)
    (tmp_path / "empty").mkdir()
    r = run_repro("summarize", tmp_path / "empty")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no runs under" in r.stderr
