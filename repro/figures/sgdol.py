"""SGDOL (Zhuang et al. 2019): SGDOL against each baseline at its best-tuned lr, the learned stepsize, and
SGDOL's sensitivity to M against the baselines' sensitivity to lr.

"Training loss" is ``trainset_loss``: the whole training set scored in eval mode after each epoch, as
in the paper. A baseline's best lr is the one with the lowest final training loss among its runs. Runs that
differ only in their seed are one setting: curves are their mean with a ±1 std band, finals are their mean.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import FIGURES, save_figure  # noqa: E402
from repro.figures._curves import complete_or_all, plot_band  # noqa: E402
from repro.results import Run, by_setting, load_runs, require  # noqa: E402
from repro.seeds import curve  # noqa: E402

IMAGE_TASKS = ("convnet-mnist", "convnet-fashion-mnist")
PAPER_SMOOTHNESS = 10.0  # the authors' M = alpha = 10: the SGDOL curve when such a run exists
CURVE_PANELS = (("epoch", "trainset_loss", "epochs", "training loss (full training set)"),
                ("epoch", "test_acc", "epochs", "test accuracy"),
                ("grad_evals", "trainset_loss", "gradient evaluations", "training loss (full training set)"),
                ("grad_evals", "test_acc", "gradient evaluations", "test accuracy"))


def is_sgdol(run: Run) -> bool:
    return run.config["optimizer"]["name"].startswith("sgdol")


def hparam(run: Run, key: str) -> float:
    """The run's value of ``key`` (load_runs writes out every default)."""
    return float(run.config["optimizer"]["hparams"][key])


def tuned_key(run: Run) -> str:
    return "smoothness" if is_sgdol(run) else "lr"


def final(run: Run, column: str) -> float:
    """The last logged value of ``column``; a diverged run (no evaluation) counts as infinitely bad."""
    values = run.metrics[column].dropna() if column in run.metrics else pd.Series(dtype=float)
    if values.empty or run.metrics["status"].eq("diverged").any():
        return math.inf if column.endswith("loss") else 0.0
    return float(values.iloc[-1])


def final_mean(seeds: list[Run], column: str) -> float:
    return sum(final(r, column) for r in seeds) / len(seeds)


def settings(runs: list[Run]) -> dict[tuple, list[Run]]:
    """Per (optimizer, hyperparameters), the seeds of one setting (``complete_or_all``): that of the newest complete
    run (of a partial one only if none is complete)."""
    chosen: dict[tuple, Run] = {}
    for run in runs:  # oldest first
        opt = run.config["optimizer"]
        key = (opt["name"], tuple(sorted(opt["hparams"].items())))
        if run.complete or key not in chosen or not chosen[key].complete:
            chosen[key] = run
    groups = by_setting(runs)
    return {key: complete_or_all(groups[run.setting]) for key, run in chosen.items()}


def pick_curves(groups: list[list[Run]]) -> dict[str, list[Run]]:
    """Per optimizer, the setting to draw: SGDOL at M = 10 if present (it is meant to need no tuning), else
    its best M; each baseline at its best-tuned lr (lowest final training loss, mean over seeds)."""
    by_opt: dict[str, list[list[Run]]] = {}
    for seeds in groups:
        by_opt.setdefault(seeds[0].config["optimizer"]["name"], []).append(seeds)
    curves = {}
    for name, options in sorted(by_opt.items(), key=lambda kv: (not kv[0].startswith("sgdol"), kv[0])):
        best = min(options, key=lambda g: final_mean(g, "trainset_loss"))
        if name.startswith("sgdol"):
            paper = [g for g in options if hparam(g[0], "smoothness") == PAPER_SMOOTHNESS]
            best = min(paper, key=lambda g: final_mean(g, "trainset_loss")) if paper else best
        curves[f"{name} ({tuned_key(best[0])}={hparam(best[0], tuned_key(best[0])):g})"] = best
    return curves


def summary_table(groups: list[list[Run]], curves: dict[str, list[Run]]) -> pd.DataFrame:
    """One row per setting: finals are means over its seeds (std for the two the sensitivity plot draws)."""
    drawn = {id(g) for g in curves.values()}
    rows = []
    for seeds in groups:
        run, last = seeds[0], seeds[0].metrics.iloc[-1]
        key = tuned_key(run)
        spread = {f"{c}_std": pd.Series([final(r, c) for r in seeds]).std(ddof=1) for c in ("trainset_loss", "test_acc")}
        rows.append({"optimizer": run.config["optimizer"]["name"], "tuned": key, "value": hparam(run, key),
                     "alpha": hparam(run, "alpha") if is_sgdol(run) else None,
                     "epochs": last["epoch"], "grad_evals": last["grad_evals"],
                     "trainset_loss": final_mean(seeds, "trainset_loss"), "test_acc": final_mean(seeds, "test_acc"),
                     "test_loss": final_mean(seeds, "test_loss"), **spread, "n": len(seeds),
                     "final_lr": sum(float(r.metrics["lr"].iloc[-1]) for r in seeds) / len(seeds),
                     "drawn": id(seeds) in drawn, "complete": all(r.complete for r in seeds),
                     "runs": " ".join(r.path.name for r in seeds)})
    return pd.DataFrame(rows).sort_values(["optimizer", "value"]).reset_index(drop=True)


def draw_curves(curves: dict[str, list[Run]], title: str, stem: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for ax, (x, y, xlabel, ylabel) in zip(axes.flat, CURVE_PANELS):
        for name, seeds in curves.items():
            style = dict(color="black", linewidth=2) if name.startswith("sgdol (") else {}
            plot_band(ax, seeds, x, y, name, **style)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if y.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}: SGDOL vs best-tuned baselines")
    fig.tight_layout()
    return save_figure(fig, stem)


def draw_stepsize(sgdol_groups: list[list[Run]], title: str, stem: Path) -> list[Path]:
    """eta over iterations (one logged value per evaluation row, plus eta_1 = 1/M at iteration 0), mean ± std
    over each setting's seeds."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for seeds in sorted(sgdol_groups, key=lambda g: (g[0].config["optimizer"]["name"], hparam(g[0], "smoothness"))):
        run, m_value = seeds[0], hparam(seeds[0], "smoothness")
        name = f"{run.config['optimizer']['name']} M={m_value:g}, alpha={hparam(run, 'alpha'):g}"
        diverged = sum(r.metrics["status"].eq("diverged").any() for r in seeds)
        if diverged:
            name += f" ({diverged} diverged)"
        line = plot_band(ax, seeds, "iteration", "lr", name)
        logged = curve(seeds, "iteration", "lr")  # none where every seed diverged before its first evaluation
        if not logged.empty:  # eta_1 = 1/M at iteration 0, joined to the first row
            first = logged.iloc[0]
            ax.plot([0, first["iteration"]], [1.0 / m_value, first["mean"]], color=line.get_color(), marker="o",
                    markersize=3)
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
        for column, ax, ylabel in (("trainset_loss", row[0], "final training loss"), ("test_acc", row[1], "final test accuracy")):
            for name, group in table[mask].groupby("optimizer"):
                group = group.sort_values("value")  # error bars: ±1 std over the seeds (none with one seed)
                ax.errorbar(group["value"], group[column].replace(math.inf, float("nan")), yerr=group[f"{column}_std"],
                            marker="o", capsize=3, label=name)
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
        written += draw_stepsize([g for g in chosen if is_sgdol(g[0])], title, Path(f"{stem}_stepsize"))
        written += draw_sensitivity(table, title, Path(f"{stem}_sensitivity"))
        # The drawn (best) runs, then every setting's final numbers.
        table[table["drawn"]].drop(columns="drawn").to_csv(stem.with_suffix(".csv"), index=False)
        table.to_csv(Path(f"{stem}_all.csv"), index=False)
        written += [stem.with_suffix(".csv"), Path(f"{stem}_all.csv")]
    return written
