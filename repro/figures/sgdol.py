"""SGDOL (Zhuang et al. 2019): SGDOL against each baseline at its best-tuned lr, the learned stepsize, and
SGDOL's sensitivity to M against the baselines' sensitivity to lr.

"Training loss" is ``train_eval_loss``: the whole training set scored in eval mode after each epoch, as
in the paper. A baseline's best lr is the one with the lowest final training loss among its runs.
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import FIGURES, save_figure  # noqa: E402
from repro.results import Run, load_runs, require  # noqa: E402

IMAGE_TASKS = ("convnet-mnist", "convnet-fashion-mnist")
PAPER_SMOOTHNESS = 10.0  # the authors' M = alpha = 10: the SGDOL curve when such a run exists
CURVE_PANELS = (("epoch", "train_eval_loss", "epochs", "training loss (full training set)"),
                ("epoch", "test_acc", "epochs", "test accuracy"),
                ("grad_evals", "train_eval_loss", "gradient evaluations", "training loss (full training set)"),
                ("grad_evals", "test_acc", "gradient evaluations", "test accuracy"))


def is_sgdol(run: Run) -> bool:
    return run.config["optimizer"]["name"].startswith("sgdol")


def hparam(run: Run, key: str) -> float:
    """The run's value of ``key``: as logged, else the optimizer's default."""
    opt = run.config["optimizer"]
    if key in opt["hparams"]:
        return float(opt["hparams"][key])
    from repro.optim import OPTIMIZERS

    default = inspect.signature(OPTIMIZERS.get(opt["name"])).parameters[key].default
    return float(default)


def tuned_key(run: Run) -> str:
    return "smoothness" if is_sgdol(run) else "lr"


def final(run: Run, column: str) -> float:
    """The last logged value of ``column``; a diverged run (no evaluation) counts as infinitely bad."""
    values = run.metrics[column].dropna() if column in run.metrics else pd.Series(dtype=float)
    if values.empty or run.metrics["status"].eq("diverged").any():
        return math.inf if column.endswith("loss") else 0.0
    return float(values.iloc[-1])


def settings(runs: list[Run]) -> dict[tuple, Run]:
    """One run per (optimizer, hyperparameters): the newest complete one (a partial one only if none is)."""
    chosen: dict[tuple, Run] = {}
    for run in runs:  # oldest first
        opt = run.config["optimizer"]
        key = (opt["name"], tuple(sorted(opt["hparams"].items())))
        if run.complete or key not in chosen or not chosen[key].complete:
            chosen[key] = run
    return chosen


def pick_curves(runs: list[Run]) -> dict[str, Run]:
    """Per optimizer, the run to draw: SGDOL at M = 10 if present (it is meant to need no tuning), else
    its best M; each baseline at its best-tuned lr (lowest final training loss)."""
    by_opt: dict[str, list[Run]] = {}
    for run in runs:
        by_opt.setdefault(run.config["optimizer"]["name"], []).append(run)
    curves = {}
    for name, group in sorted(by_opt.items(), key=lambda kv: (not kv[0].startswith("sgdol"), kv[0])):
        best = min(group, key=lambda r: final(r, "train_eval_loss"))
        if name.startswith("sgdol"):
            paper = [r for r in group if hparam(r, "smoothness") == PAPER_SMOOTHNESS]
            best = min(paper, key=lambda r: final(r, "train_eval_loss")) if paper else best
        curves[f"{name} ({tuned_key(best)}={hparam(best, tuned_key(best)):g})"] = best
    return curves


def summary_table(runs: list[Run], curves: dict[str, Run]) -> pd.DataFrame:
    drawn = {id(r) for r in curves.values()}
    rows = []
    for run in runs:
        last = run.metrics.iloc[-1]
        key = tuned_key(run)
        rows.append({"optimizer": run.config["optimizer"]["name"], "tuned": key, "value": hparam(run, key),
                     "alpha": hparam(run, "alpha") if is_sgdol(run) else None,
                     "epochs": last["epoch"], "grad_evals": last["grad_evals"],
                     "train_eval_loss": final(run, "train_eval_loss"), "test_acc": final(run, "test_acc"),
                     "test_loss": final(run, "test_loss"), "final_lr": last["lr"],
                     "drawn": id(run) in drawn, "complete": run.complete, "run": run.path.name})
    return pd.DataFrame(rows).sort_values(["optimizer", "value"]).reset_index(drop=True)


def draw_curves(curves: dict[str, Run], title: str, stem: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for ax, (x, y, xlabel, ylabel) in zip(axes.flat, CURVE_PANELS):
        for name, run in curves.items():
            m = run.metrics.dropna(subset=[y])
            style = dict(color="black", linewidth=2) if name.startswith("sgdol (") else {}
            ax.plot(m[x], m[y], marker="o", markersize=3, label=name + ("" if run.complete else " (partial)"), **style)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if y.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}: SGDOL vs best-tuned baselines")
    fig.tight_layout()
    return save_figure(fig, stem)


def draw_stepsize(sgdol_runs: list[Run], title: str, stem: Path) -> list[Path]:
    """eta over iterations (one logged value per evaluation row, plus eta_1 = 1/M at iteration 0)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in sorted(sgdol_runs, key=lambda r: (r.config["optimizer"]["name"], hparam(r, "smoothness"))):
        m_value = hparam(run, "smoothness")
        name = f"{run.config['optimizer']['name']} M={m_value:g}, alpha={hparam(run, 'alpha'):g}"
        if run.metrics["status"].eq("diverged").any():
            name += " (diverged)"
        iters = [0, *run.metrics["iteration"]]
        line, = ax.plot(iters, [1.0 / m_value, *run.metrics["lr"]], marker="o", markersize=3, label=name)
        ax.axhline(1.0 / m_value, color=line.get_color(), linestyle="--", linewidth=0.8)
        ax.axhline(2.0 / m_value, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("iterations (SGDOL steps; 2 gradient evaluations each)")
    ax.set_ylabel("learned stepsize eta")
    ax.set_yscale("log")
    ax.set_title(f"{title}: learned stepsize (dashed 1/M, dotted 2/M)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)


def draw_sensitivity(table: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="col")
    families = ((axes[0], table["optimizer"].str.startswith("sgdol"), "M (smoothness)"),
                (axes[1], ~table["optimizer"].str.startswith("sgdol"), "lr"))
    for row, mask, xlabel in families:
        for column, ax, ylabel in (("train_eval_loss", row[0], "final training loss"), ("test_acc", row[1], "final test accuracy")):
            for name, group in table[mask].groupby("optimizer"):
                group = group.sort_values("value")
                ax.plot(group["value"], group[column].replace(math.inf, float("nan")), marker="o", label=name)
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if column.endswith("loss"):
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if mask.any():
                ax.legend(fontsize=8)
    fig.suptitle(f"{title}: sensitivity of SGDOL to M and of the baselines to lr")
    fig.tight_layout()
    return save_figure(fig, stem)


@FIGURES.register("sgdol")
def draw(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    runs = load_runs(results, IMAGE_TASKS, preset)
    require([r for r in runs if is_sgdol(r)], "SGDOL runs on convnet-mnist or convnet-fashion-mnist", results,
            "run e.g. `repro run convnet-fashion-mnist --optimizer sgdol` and "
            "`repro sweep convnet-fashion-mnist --optimizer sgd,adam,adagrad --lr 1e-4,1e-3,1e-2,1e-1` first")
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.preset, run.config["world_size"]), []).append(run)
    written = []
    for (task, preset_name, world), group in sorted(groups.items()):
        if not any(is_sgdol(r) for r in group):
            continue
        chosen = list(settings(group).values())
        curves = pick_curves(chosen)
        table = summary_table(chosen, curves)
        title = f"{task} ({preset_name} preset, N={world})"
        stem = out / f"sgdol_{task}_{preset_name}_N{world}"
        written += draw_curves(curves, title, stem)
        written += draw_stepsize([r for r in chosen if is_sgdol(r)], title, Path(f"{stem}_stepsize"))
        written += draw_sensitivity(table, title, Path(f"{stem}_sensitivity"))
        # The drawn (best) runs, then every setting's final numbers.
        table[table["drawn"]].drop(columns="drawn").to_csv(stem.with_suffix(".csv"), index=False)
        table.to_csv(Path(f"{stem}_all.csv"), index=False)
        written += [stem.with_suffix(".csv"), Path(f"{stem}_all.csv")]
    return written
