"""The AdamW paper's (Zhuang et al.) figures, from runs of the Adam-family optimizers on image tasks.

* ``adamw-heatmap``: final test error over (lr, lambda), one heat map per optimizer side by side, best cell
  boxed, diverged cells marked; plus training loss and test accuracy curves of each optimizer's best cell.
* ``adamw-histograms``: histograms of |gradient| and |update| magnitudes (all layers pooled) at the epochs
  recorded with ``--log-stats``.
* ``adamw-loss-scale``: best final test error against lambda for loss multipliers x1/x10/x100 per optimizer:
  a scale-free optimizer (AdamW) keeps its best lambda, Adam-l2's moves.

Runs are grouped by setting (task, preset, BN or not, loss multiplier, schedule, epochs, workers); within a
setting, a cell is (optimizer, lr, lambda): the mean over the complete runs that differ only in their seed
(``results.by_setting``), annotated with std and n.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import FIGURES, save_figure  # noqa: E402
from repro.figures._curves import plot_band  # noqa: E402
from repro.results import Run, by_setting, load_runs, require  # noqa: E402

# Any optimizer with a step size and a weight decay gets heat maps (adabelief, diffgrad...); these come first.
ORDER = {name: i for i, name in enumerate(("adam-l2", "adamw", "adamprox", "adam"))}


def _order(name: str) -> tuple[int, str]:
    return ORDER.get(name, len(ORDER)), name


def _bn(run: Run) -> bool:
    return bool(run.config["task"]["options"].get("bn", True))


def multiplier(run: Run) -> float:
    return float(run.config["train"].get("loss_multiplier", 1.0))


def setting(run: Run, with_multiplier: bool = True) -> tuple:
    key = (run.task, run.preset, _bn(run), run.config["schedule"]["name"], run.config["train"]["epochs"],
           run.config["world_size"])
    return key + ((multiplier(run),) if with_multiplier else ())


def setting_name(key: tuple) -> str:
    task, preset, bn, schedule, epochs, world = key[:6]
    text = f"{task} {'BN' if bn else 'no BN'}, {preset} preset, {epochs} epochs, {schedule} lr"
    text += f", N={world}" if world > 1 else ""
    return text + (f", loss x{key[6]:g}" if len(key) > 6 and key[6] != 1 else "")


def setting_stem(key: tuple) -> str:
    task, preset, bn, schedule, epochs, world = key[:6]
    stem = f"{task}_{preset}_{'bn' if bn else 'nobn'}_{schedule}_e{epochs}_N{world}"
    return stem + (f"_x{key[6]:g}" if len(key) > 6 and key[6] != 1 else "")


def _diverged(run: Run) -> bool:
    return str(run.metrics.iloc[-1].get("status", "")) == "diverged"


def cell_table(runs: list[Run]) -> pd.DataFrame:
    """One row per (setting, optimizer, lr, lambda) over its complete seeds: mean, std and n of the final test
    error of the seeds that did not diverge, how many diverged (``diverged``: all of them did), and the runs.
    Where two settings fall in one cell (e.g. another beta2), the one with the newest run is used."""
    complete = [r for r in runs if r.complete]
    newest = {id(r): i for i, r in enumerate(complete)}  # oldest first
    rows = {}
    for group in sorted(by_setting(complete).values(), key=lambda g: max(newest[id(r)] for r in g)):
        run = group[0]
        hp = run.config["optimizer"]["hparams"]
        errors = pd.Series([1.0 - float(r.metrics.iloc[-1].get("test_acc", float("nan"))) for r in group
                            if not _diverged(r)], dtype=float).dropna()
        rows[(setting(run), run.config["optimizer"]["name"], hp.get("lr"), hp.get("weight_decay", 0.0))] = {
            "setting": setting(run), "optimizer": run.config["optimizer"]["name"], "lr": float(hp.get("lr")),
            "weight_decay": float(hp.get("weight_decay", 0.0)), "diverged": len(errors) == 0,
            "test_error": errors.mean() if len(errors) else float("nan"),
            "test_error_std": errors.std(ddof=1) if len(errors) > 1 else float("nan"), "n": len(errors),
            "n_diverged": sum(_diverged(r) for r in group),
            "epochs_run": float(run.metrics.iloc[-1]["epoch"]), "runs": group}
    return pd.DataFrame(list(rows.values()))


def _cell_text(c) -> str:
    """'div.', else the mean test error in %, and under it ±std and n when more than one seed finished."""
    if c["diverged"]:
        return "div."
    text = f"{100 * c['test_error']:.1f}"
    if c["n"] > 1:
        text += f"\n±{100 * c['test_error_std']:.1f} n={int(c['n'])}"
    return text + (f"\n+{int(c['n_diverged'])} div." if c["n_diverged"] else "")


def best_cells(table: pd.DataFrame) -> pd.DataFrame:
    ok = table[~table["diverged"] & table["test_error"].notna()]
    return ok.loc[ok.groupby(["optimizer"])["test_error"].idxmin()] if not ok.empty else ok


def _adam_runs(results: Path, preset: str | None) -> list[Run]:
    # P2's benchmarks: CIFAR networks with or without BN (the "bn" option), not e.g. Fashion-MNIST's CNN.
    runs = [r for r in load_runs(results, None, preset) if {"lr", "weight_decay"} <= set(r.config["optimizer"]["hparams"])
            and "bn" in r.config["task"]["options"] and r.config.get("world_size", 1) == 1
            and "test_acc" in r.metrics.columns]
    require(runs, "Adam-family image-classification runs", results,
            "run e.g. `repro sweep resnet20-cifar10 --no-bn --optimizer adam-l2,adamw --lr 5e-4,1e-3 "
            "--weight-decay 5e-5,5e-4` first")
    return runs


def _fmt(v: float) -> str:
    return "0" if v == 0 else f"{v:.0e}".replace("e-0", "e-")


@FIGURES.register("adamw-heatmap")
def draw_heatmaps(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    table = cell_table(_adam_runs(results, preset))
    require(list(table.index), "complete Adam-family runs", results, "wait for the runs to finish")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, group in table.groupby("setting", sort=True):
        stem = out / f"adamw-heatmap_{setting_stem(key)}"
        optimizers = sorted(group["optimizer"].unique(), key=_order)
        lrs = sorted(group["lr"].unique())
        lams = sorted(group["weight_decay"].unique())
        finite = group["test_error"].dropna()
        vmin, vmax = (100 * finite.min(), 100 * finite.max()) if not finite.empty else (0.0, 100.0)
        fig, axes = plt.subplots(1, len(optimizers), squeeze=False, layout="constrained",
                                 figsize=(2.0 + 0.8 * len(lams) * len(optimizers), 1.8 + 0.55 * len(lrs)))
        image = None
        for ax, name in zip(axes[0], optimizers):
            cells = group[group["optimizer"] == name]
            grid = np.full((len(lrs), len(lams)), np.nan)
            for _, c in cells.iterrows():
                grid[lrs.index(c["lr"]), lams.index(c["weight_decay"])] = 100 * c["test_error"]
            image = ax.imshow(grid, cmap="viridis_r", vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
            best = best_cells(cells)
            for _, c in cells.iterrows():
                i, j = lrs.index(c["lr"]), lams.index(c["weight_decay"])
                text = _cell_text(c)
                light = not c["diverged"] and vmax > vmin and (100 * c["test_error"] - vmin) / (vmax - vmin) < 0.5
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="red" if c["diverged"] else ("black" if light else "white"))
                if c["diverged"]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx", color="red", lw=0))
            for _, c in best.iterrows():
                ax.add_patch(plt.Rectangle((lams.index(c["weight_decay"]) - 0.5, lrs.index(c["lr"]) - 0.5), 1, 1,
                                           fill=False, edgecolor="red", lw=2.5))
            ax.set_xticks(range(len(lams)), [_fmt(v) for v in lams], rotation=45, fontsize=8)
            ax.set_yticks(range(len(lrs)), [_fmt(v) for v in lrs], fontsize=8)
            ax.set_xlabel("weight decay lambda")
            if ax is axes[0][0]:
                ax.set_ylabel("initial step size lr")
            ax.set_title(name)
        fig.colorbar(image, ax=list(axes[0]), label="final test error (%)", shrink=0.9)
        seeds = "one seed per cell" if (group["n"] <= 1).all() else "mean ± std over n seeds"
        fig.suptitle(f"Final test error: {setting_name(key)}\n({seeds}; box: best, div.: diverged)", fontsize=9)
        written += save_figure(fig, stem)
        cells = group.drop(columns=["setting", "runs"]).assign(runs=[" ".join(r.path.name for r in g) for g in group["runs"]])
        cells.sort_values(["optimizer", "lr", "weight_decay"]).to_csv(stem.with_suffix(".csv"), index=False)
        written.append(stem.with_suffix(".csv"))
        written += _best_curves(key, group, out)
    return written


def _best_curves(key: tuple, group: pd.DataFrame, out: Path) -> list[Path]:
    best = best_cells(group)
    if best.empty:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for _, c in best.sort_values("optimizer", key=lambda s: s.map(_order)).iterrows():
        label = f"{c['optimizer']} (lr {_fmt(c['lr'])}, lambda {_fmt(c['weight_decay'])})"
        finished = [r for r in c["runs"] if not _diverged(r)]  # as the cell's mean
        plot_band(axes[0], finished, "epoch", "train_loss", label)
        plot_band(axes[1], finished, "epoch", "test_acc", label)
    axes[0].set_yscale("log")
    for ax, ylabel in zip(axes, ("training loss", "test accuracy")):
        ax.set_xlabel("epochs")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Best cells: {setting_name(key)}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out / f"adamw-curves_{setting_stem(key)}")


@FIGURES.register("adamw-histograms")
def draw_histograms(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    runs = [r for r in _adam_runs(results, preset) if (r.path / "stats.npz").is_file()]
    require(runs, "runs with --log-stats", results, "add e.g. `--log-stats 1 --log-stats 300` to `repro run`")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for run in runs:
        stats = np.load(run.path / "stats.npz")
        edges, epochs = stats["edges"], stats["epochs"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, kind in zip(axes, ("grad", "update")):
            for row, epoch in enumerate(epochs):
                counts = stats[f"{kind}_counts"][row]
                if counts.sum() == 0:
                    continue
                ax.stairs(counts / counts.sum(), edges, label=f"epoch {epoch}")
            ax.set_xlabel(f"log10 |{'gradient' if kind == 'grad' else 'update'}| (all layers pooled)")
            ax.set_ylabel("fraction of entries")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        hp = run.config["optimizer"]["hparams"]
        fig.suptitle(f"{run.config['optimizer']['name']} lr {_fmt(hp.get('lr', 0))} lambda {_fmt(hp.get('weight_decay', 0))}: "
                     f"{setting_name(setting(run))}", fontsize=9)
        fig.tight_layout()
        written += save_figure(fig, out / f"adamw-histograms_{run.path.name}")
    return written


@FIGURES.register("adamw-loss-scale")
def draw_loss_scale(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    table = cell_table(_adam_runs(results, preset))
    require(list(table.index), "complete Adam-family runs", results, "wait for the runs to finish")
    table["base"] = table["setting"].map(lambda k: k[:6])
    table["multiplier"] = table["setting"].map(lambda k: k[6])
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for base, group in table.groupby("base", sort=True):
        if group["multiplier"].nunique() < 2:
            continue
        optimizers = sorted(group["optimizer"].unique(), key=_order)
        # one y axis for every panel: an optimizer's spread across c reads against the other's, not self-scaled
        fig, axes = plt.subplots(1, len(optimizers), figsize=(4.5 * len(optimizers), 3.6), squeeze=False,
                                 sharey=True)
        summary = []
        for ax, name in zip(axes[0], optimizers):
            cells = group[(group["optimizer"] == name) & ~group["diverged"]]
            # Only step sizes run at every multiplier, so that no curve is the best over more cells than another.
            common = set.intersection(*(set(g["lr"]) for _, g in cells.groupby("multiplier"))) if len(cells) else set()
            cells = cells[cells["lr"].isin(common)]
            for mult, by_mult in cells.groupby("multiplier"):
                # best over lr for each lambda: the lambda axis is what moves (or not) with the loss scale
                best_rows = by_mult.loc[by_mult.groupby("weight_decay")["test_error"].idxmin()].sort_values("weight_decay")
                # error bars: the seeds' std of each plotted cell; n in the legend
                line = ax.errorbar(best_rows["weight_decay"], best_rows["test_error"],
                                   yerr=best_rows["test_error_std"].fillna(0.0), marker="o", capsize=3,
                                   label=f"loss x{mult:g} (n = {int(best_rows['n'].min())}"
                                         f"{'' if best_rows['n'].nunique() == 1 else '+'})")[0]
                best = by_mult.loc[by_mult["test_error"].idxmin()]
                ax.plot([best["weight_decay"]], [best["test_error"]], marker="*", markersize=14, color=line.get_color())
                summary.append({"optimizer": name, "loss_multiplier": mult, "best_lr": best["lr"],
                                "best_weight_decay": best["weight_decay"], "test_error": best["test_error"],
                                "test_error_std": best["test_error_std"], "n": best["n"]})
            ax.set_xscale("symlog", linthresh=1e-5)
            ax.set_xlabel("weight decay lambda (best lr run at every c)")
            ax.set_ylabel("final test error (mean ± std over seeds)")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"Loss scaled by c: {setting_name(base)} (star: best lambda)", fontsize=9)
        fig.tight_layout()
        stem = out / f"adamw-loss-scale_{setting_stem(base)}"
        written += save_figure(fig, stem)
        pd.DataFrame(summary).to_csv(stem.with_suffix(".csv"), index=False)
        written.append(stem.with_suffix(".csv"))
    if not written:
        require([], "settings run with two or more --loss-multiplier values", results,
                "run the same sweep with `--loss-multiplier 10` and `--loss-multiplier 100`")
    return written


def summary_line(table: pd.DataFrame) -> str:
    """One line per optimizer: its best cell (used in docs and reports)."""
    best = best_cells(table)
    return "; ".join(f"{c['optimizer']}: lr {c['lr']:g}, lambda {c['weight_decay']:g}, test error "
                     f"{100 * c['test_error']:.2f}%" for _, c in best.iterrows() if not math.isnan(c["test_error"]))
