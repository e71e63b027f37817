"""``adamw-depth``: the AdamW paper's best test error against network depth (ResNet-20 ... 218), without and with
BN, one line per Adam-family optimizer. A point is the optimizer's best setting on that network (over lr and
lambda: the setting with the lowest mean final test error over its seeds); error bars are the std over seeds."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import FIGURES, save_figure  # noqa: E402
from repro.results import by_setting, load_runs, require  # noqa: E402

DEPTH = re.compile(r"^resnet(\d+)-cifar10$")
ADAM_FAMILY = ("adam-l2", "adamw", "adamprox")


def best_by_depth(results: Path, preset: str | None = None) -> pd.DataFrame:
    """One row per (bn, optimizer, depth): the best setting's mean and std of final test error (%) and n."""
    runs = [r for r in load_runs(results, preset=preset) if r.complete and DEPTH.match(r.task)
            and r.config["optimizer"]["name"] in ADAM_FAMILY and "test_acc" in r.metrics]
    rows = []
    for group in by_setting(runs).values():
        errors = pd.Series([100 * (1 - float(r.metrics["test_acc"].dropna().iloc[-1])) for r in group])
        first = group[0]
        rows.append({"bn": bool(first.config["task"]["options"].get("bn", True)),
                     "optimizer": first.config["optimizer"]["name"], "depth": int(DEPTH.match(first.task).group(1)),
                     "lr": first.config["optimizer"]["hparams"].get("lr"),
                     "weight_decay": first.config["optimizer"]["hparams"].get("weight_decay"),
                     "loss_multiplier": float(first.config["train"].get("loss_multiplier", 1.0)),
                     "mean": errors.mean(), "std": errors.std() if len(errors) > 1 else float("nan"), "n": len(errors)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table[table["loss_multiplier"] == 1.0]
    best = table.loc[table.groupby(["bn", "optimizer", "depth"])["mean"].idxmin()]
    return best.sort_values(["bn", "optimizer", "depth"]).reset_index(drop=True)


@FIGURES.register("adamw-depth")
def draw(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    table = best_by_depth(results, preset)
    require(list(table.index), "complete Adam-family ResNet runs on CIFAR-10", results,
            "run e.g. `repro reproduce adamw-depth`")
    out.mkdir(parents=True, exist_ok=True)
    panels = sorted(table["bn"].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, bn in zip(axes[0], panels):
        for optimizer, rows in table[table["bn"] == bn].groupby("optimizer"):
            n = ", ".join(sorted({f"n={k}" for k in rows["n"]}))
            ax.errorbar(rows["depth"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", capsize=3,
                        label=f"{optimizer} ({n})")
        ax.set_xscale("log")
        depths = sorted(table["depth"].unique())
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.xaxis.set_minor_formatter(NullFormatter())  # a log axis labels its minor ticks (3x10^1) otherwise
        ax.set_xlabel("ResNet depth")
        ax.set_ylabel("best final test error (%)")
        ax.set_title("with BN" if bn else "without BN")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Best test error vs depth (best lr, lambda per network; bars: std over seeds)", fontsize=9)
    fig.tight_layout()
    stem = out / "adamw-depth"
    paths = save_figure(fig, stem)
    table.rename(columns={"mean": "test_error_pct_mean", "std": "test_error_pct_std"}).to_csv(
        stem.with_suffix(".csv"), index=False)
    return [*paths, stem.with_suffix(".csv")]
