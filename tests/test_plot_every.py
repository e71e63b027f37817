"""`repro plot` without a figure: every figure the runs allow, from RESULTS and from experiments' folders, one line
per figure drawn (where) and per figure not drawn (why); exit 2 with one line when none can be drawn."""
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_repro
from repro.figures import FIGURES
from repro.figures._every import draw_every, run_folders
from test_image_figures import fake_run
from test_sgdol import _fake_run as fake_sgdol_run

COMMITTED = Path(__file__).resolve().parents[1] / "results"


def _celgc_cifar_runs(results):
    for name, sync in (("every", ("every-step", {})), ("i2", ("periodic", {"interval": 2}))):
        fake_run(results, name, "clipped-sgd", 0.1, 0.0, 0.6, world=2, sync=sync)
    fake_run(results, "one", "clipped-sgd", 0.1, 0.0, 0.5, world=1, sync=("periodic", {"interval": 2}))


def _adamw_experiment_runs(results):
    """Runs as `repro reproduce adamw-nobn` lays them out: RESULTS/adamw-nobn/quick/TASK/RUN."""
    folder = results / "adamw-nobn" / "quick"
    fake_run(folder, "a", "adam-l2", 1e-3, 5e-4, 0.6)
    fake_run(folder, "b", "adamw", 1e-3, 5e-5, 0.7)
    return folder


def test_run_folders_are_results_and_the_folders_below_it_that_hold_runs(tmp_path):
    results = tmp_path / "results"
    _celgc_cifar_runs(results)
    folder = _adamw_experiment_runs(results)
    fake_run(results / "seed-check", "s", "adamw", 1e-3, 5e-5, 0.7)
    (results / "figures").mkdir()
    assert run_folders(results) == [results, results / "seed-check", folder]
    assert run_folders(results / "figures") == []


@pytest.mark.slow
def test_draw_every_draws_each_folder_apart_and_names_the_rest(tmp_path):
    results = tmp_path / "results"
    _celgc_cifar_runs(results)
    folder = _adamw_experiment_runs(results)
    out = tmp_path / "figs"
    outcome = draw_every(results, out)
    drawn = {(figure, source.runs) for figure, source, _ in outcome.drawn}
    # RESULTS gets every figure its runs allow; the experiment's folder only its experiment's figure (as
    # `repro reproduce adamw-nobn` draws it), though its runs would allow e.g. adamw-depth too.
    assert {("celgc-cifar", results), ("celgc-speedup", results)} <= drawn
    assert {figure for figure, runs in drawn if runs == folder} == {"adamw-heatmap"}
    # --out mirrors the folders below RESULTS, so that two folders' figures of one name never overwrite each other
    for figure, source, paths in outcome.drawn:
        assert source.out == out / source.runs.relative_to(results)
        assert all(p.parent == source.out and p.exists() for p in paths)
    assert not (results / "figures").exists() and not (folder / "figures").exists()
    assert set(outcome.not_drawn) == set(FIGURES.names()) - {figure for figure, _ in drawn}
    assert {"celgc-lm", "sgdol", "adamw-histograms"} <= set(outcome.not_drawn)
    assert "no clipped-sgd language-model runs" in outcome.not_drawn["celgc-lm"]
    assert outcome.failed == []


def test_every_figure_is_tried_on_results_even_with_runs_only_in_experiments_folders(tmp_path):
    from repro.figures._every import sources

    folder = _adamw_experiment_runs(tmp_path / "results")
    found = sources(tmp_path / "results", None)
    assert [s.runs for s in found] == [tmp_path / "results", folder]
    assert found[0].figures == tuple(FIGURES.names()) and found[1].figures == ("adamw-heatmap",)
    assert found[1].out == folder / "figures"


@pytest.mark.slow
def test_sgdol_figure_draws_a_setting_whose_runs_diverged_before_logging_a_stepsize(tmp_path):
    # The committed results/convnet-fashion-mnist holds such a run (SGDOL M=0.1, NaN at its first evaluation).
    fake_sgdol_run(tmp_path, "ok", "sgdol", {"smoothness": 10.0, "alpha": 10.0}, 0.5)
    fake_sgdol_run(tmp_path, "nan", "sgdol", {"smoothness": 0.1, "alpha": 10.0}, 0.5, lrs=(math.nan, math.nan))
    fake_sgdol_run(tmp_path, "sgd", "sgd", {"lr": 0.1}, 0.4)
    paths = FIGURES.get("sgdol")(tmp_path, tmp_path / "figures")
    assert any(p.name.endswith("_stepsize.png") for p in paths)


@pytest.mark.slow
def test_plot_without_figure_cli(tmp_path):
    results = tmp_path / "results"
    _celgc_cifar_runs(results)
    folder = _adamw_experiment_runs(results)
    r = run_repro("plot", cwd=tmp_path)  # ./results
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "drew celgc-cifar from results: 6 files in results/figures" in lines
    assert "drew adamw-heatmap from results/adamw-nobn/quick: 5 files in results/adamw-nobn/quick/figures" in lines
    not_drawn = [line for line in lines if line.startswith("not drawn ")]
    assert 0 < len(not_drawn) < len(FIGURES.names()) - 2
    assert any(line.startswith("not drawn celgc-lm: no clipped-sgd language-model runs under results")
               for line in not_drawn)
    assert (folder / "figures" / "adamw-heatmap_resnet20-cifar10_quick_nobn_constant_e3_N1.png").stat().st_size > 0
    assert r.stderr == ""

    # a named figure still works as before
    r = run_repro("plot", "celgc-cifar", "--results", results, "--out", tmp_path / "one")
    assert r.returncode == 0 and (tmp_path / "one" / "celgc-cifar_resnet20-cifar10_quick_N2.png").exists()


@pytest.mark.slow
def test_plot_without_figure_exits_2_in_one_line_when_nothing_can_be_drawn(tmp_path):
    (tmp_path / "results").mkdir()
    r = run_repro("plot", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("repro: error: no runs under results"), r.stderr

    r = run_repro("plot", "--results", tmp_path / "nowhere")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr

    # runs, but none that any figure draws (a diverged-only SGDOL setting is drawn; an Adagrad MNIST run is not)
    fake_sgdol_run(tmp_path / "results", "ada", "adagrad", {"lr": 0.01}, 0.5)
    r = run_repro("plot", cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert len([line for line in r.stdout.splitlines() if line.startswith("not drawn ")]) == len(FIGURES.names())
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("repro: error: no figure could be drawn"), r.stderr
    assert not (tmp_path / "results" / "figures").exists() or not any((tmp_path / "results" / "figures").iterdir())


@pytest.mark.slow
def test_plot_without_figure_on_the_committed_results(tmp_path):
    """The committed layout: top-level TASK/RUN folders and an experiment's EXPERIMENT/quick folder."""
    results = tmp_path / "results"
    for sub in ("convnet-fashion-mnist", "lstm-ptb"):
        shutil.copytree(COMMITTED / sub, results / sub, ignore=shutil.ignore_patterns("figures", "*.pt"))
    # an experiment's quick folder: the committed LM runs of the earlier quick rule (their layout is the same)
    shutil.copytree(COMMITTED / "celgc-ptb" / "quick-superseded", results / "celgc-ptb" / "quick",
                    ignore=shutil.ignore_patterns("figures", "*.pt"))
    r = run_repro("plot", "--results", results)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert f"drew sgdol from {results}: 8 files in {results / 'figures'}" in lines
    assert f"drew celgc-lm from {results}: 3 files in {results / 'figures'}" in lines
    experiment = results / "celgc-ptb" / "quick"
    assert f"drew celgc-lm from {experiment}: 3 files in {experiment / 'figures'}" in lines
    table = pd.read_csv(results / "celgc-ptb" / "quick" / "figures" / "celgc-lm_lstm-ptb_quick_N4.csv")
    assert list(table["curve"]) == ["every-step (naive parallel)", "I=4", "I=16"]
