"""Shared curve drawing: ``plot_band`` (the mean of a setting's seeds with a ±1 std band, n in the legend), and
CELGC's curve figures: one 2x2 grid per (task, preset, N), one curve per interval I plus the every-step baseline,
and a CSV with each curve's final numbers."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import save_figure  # noqa: E402
from repro.results import Run, by_setting  # noqa: E402
from repro.seeds import curve, final_stats  # noqa: E402


def plot_band(ax, runs: list[Run], x: str, y: str, label: str, **style):
    """One line: the mean of ``y`` over ``runs`` (one setting's seeds) against ``x``, a shaded ±1 std band where
    two or more seeds have a value, ``(n=K)`` in the label and ``partial`` when a seed has not finished."""
    c = curve(runs, x, y)
    partial = sum(not r.complete for r in runs)
    label += f" (n={len(runs)}" + (f", {partial} partial)" if partial else ")")
    line, = ax.plot(c[x], c["mean"], marker="o", markersize=3, label=label, **style)
    if len(runs) > 1:  # the std is NaN where one seed has a value: fill_between leaves a gap there
        ax.fill_between(c[x], c["mean"] - c["std"], c["mean"] + c["std"], color=line.get_color(), alpha=0.2, lw=0)
    return line


def curve_name(run: Run) -> str:
    sync = run.config["sync"]
    if sync["name"] == "every-step":
        return "every-step (naive parallel)"
    if sync["name"] == "periodic":
        return f"I={sync['options']['interval']}"
    return sync["name"]


def _sort_key(name: str):
    return (0, 0) if name.startswith("every") else (1, int(name[2:]) if name.startswith("I=") else 10**9)


def complete_or_all(seeds: list[Run]) -> list[Run]:
    """A setting's complete seeds, or all of them when none is (a run in progress is still worth a look); never a
    mix, which would average final numbers taken at different epochs."""
    return [r for r in seeds if r.complete] or seeds


def latest_per_curve(runs: list[Run]) -> dict[str, list[Run]]:
    """Per curve, the seeds of one setting (``complete_or_all``): that of the newest complete run (of a partial one
    only when no run of the curve completed), so a curve never mixes e.g. two step sizes."""
    chosen: dict[str, Run] = {}
    for run in runs:  # oldest first
        name = curve_name(run)
        if run.complete or name not in chosen or not chosen[name].complete:
            chosen[name] = run
    groups = by_setting(runs)
    return {name: complete_or_all(groups[run.setting])
            for name, run in sorted(chosen.items(), key=lambda kv: _sort_key(kv[0]))}


def draw_interval_curves(runs: list[Run], out: Path, figure: str, panels, log_y: set[str],
                         summary_columns: tuple[str, ...]) -> list[Path]:
    """``panels``: (x column, y column, x label, y label), two rows of them; ``log_y``: y columns drawn on a log
    scale."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.preset, run.config["world_size"]), []).append(run)
    for (task, preset_name, world), group in sorted(groups.items()):
        curves = latest_per_curve(group)
        cols = (len(panels) + 1) // 2
        fig, axes = plt.subplots(2, cols, figsize=(5 * cols, 7.5), squeeze=False)
        for ax, (x, y, xlabel, ylabel) in zip(axes.flat, panels):
            for name, seeds in curves.items():
                style = dict(color="black", linestyle="--") if name.startswith("every") else {}
                plot_band(ax, seeds, x, y, name, **style)
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


def summarize(curves: dict[str, list[Run]], columns: tuple[str, ...]) -> pd.DataFrame:
    """Final numbers per curve (means over its seeds, with std and n for ``columns``), and training time per epoch
    relative to the every-step baseline."""
    rows = []
    for name, seeds in curves.items():
        finals = final_stats(seeds, ["epoch", "wall_seconds", *columns, "comm_rounds", "comm_bytes"])
        row = {"curve": name, "epochs": finals["epoch"][0], "wall_seconds": finals["wall_seconds"][0]}
        for c in columns:
            row.update({c: finals[c][0], f"{c}_std": finals[c][1], f"{c}_n": finals[c][2]})
        rows.append({**row, "comm_rounds": finals["comm_rounds"][0], "comm_bytes": finals["comm_bytes"][0],
                     "complete": all(r.complete for r in seeds), "runs": " ".join(r.path.name for r in seeds)})
    table = pd.DataFrame(rows)
    base = table[table["curve"].str.startswith("every")]
    if not base.empty:
        per_epoch = table["wall_seconds"] / table["epochs"]
        table["speedup_vs_every_step"] = (base["wall_seconds"].iloc[0] / base["epochs"].iloc[0]) / per_epoch
    return table
