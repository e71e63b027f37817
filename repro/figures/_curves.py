"""Shared drawing for CELGC's curve figures: one 2x2 grid per (task, preset, N), one curve per interval I
plus the every-step baseline, and a CSV with each curve's final numbers."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import save_figure  # noqa: E402
from repro.results import Run  # noqa: E402


def curve_name(run: Run) -> str:
    sync = run.config["sync"]
    if sync["name"] == "every-step":
        return "every-step (naive parallel)"
    if sync["name"] == "periodic":
        return f"I={sync['options']['interval']}"
    return sync["name"]


def _sort_key(name: str):
    return (0, 0) if name.startswith("every") else (1, int(name[2:]) if name.startswith("I=") else 10**9)


def latest_per_curve(runs: list[Run]) -> dict[str, Run]:
    """The newest complete run per curve (a partial one only when no complete one exists)."""
    chosen: dict[str, Run] = {}
    for run in runs:  # oldest first
        name = curve_name(run)
        if run.complete or name not in chosen or not chosen[name].complete:
            chosen[name] = run
    return dict(sorted(chosen.items(), key=lambda kv: _sort_key(kv[0])))


def draw_interval_curves(runs: list[Run], out: Path, figure: str, panels, log_y: set[str],
                         summary_columns: tuple[str, ...]) -> list[Path]:
    """``panels``: four (x column, y column, x label, y label); ``log_y``: y columns drawn on a log scale."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.preset, run.config["world_size"]), []).append(run)
    for (task, preset_name, world), group in sorted(groups.items()):
        curves = latest_per_curve(group)
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
        for ax, (x, y, xlabel, ylabel) in zip(axes.flat, panels):
            for name, run in curves.items():
                m = run.metrics.dropna(subset=[y])
                style = dict(color="black", linestyle="--") if name.startswith("every") else {}
                ax.plot(m[x], m[y], marker="o", markersize=3, label=name + ("" if run.complete else " (partial)"), **style)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if y in log_y:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(ScalarFormatter())
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"CELGC on {task} ({preset_name} preset, N={world} workers)")
        fig.tight_layout()
        stem = out / f"{figure}_{task}_{preset_name}_N{world}"
        written += save_figure(fig, stem)
        summarize(curves, summary_columns).to_csv(stem.with_suffix(".csv"), index=False)
        written.append(stem.with_suffix(".csv"))
    return written


def summarize(curves: dict[str, Run], columns: tuple[str, ...]) -> pd.DataFrame:
    """Final numbers per curve, and training time per epoch relative to the every-step baseline."""
    rows = []
    for name, run in curves.items():
        last = run.metrics.iloc[-1]
        rows.append({"curve": name, "epochs": last["epoch"], "wall_seconds": last["wall_seconds"],
                     **{c: last.get(c) for c in columns}, "comm_rounds": last["comm_rounds"],
                     "comm_bytes": last["comm_bytes"], "complete": run.complete, "run": run.path.name})
    table = pd.DataFrame(rows)
    base = table[table["curve"].str.startswith("every")]
    if not base.empty:
        per_epoch = table["wall_seconds"] / table["epochs"]
        table["speedup_vs_every_step"] = (base["wall_seconds"].iloc[0] / base["epochs"].iloc[0]) / per_epoch
    return table
