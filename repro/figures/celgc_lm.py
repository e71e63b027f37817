"""CELGC (Liu et al. 2022), language models: training loss and validation perplexity against epochs and
against wall-clock time, one curve per communication interval I plus the every-step baseline."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import FIGURES  # noqa: E402
from repro.results import Run, load_runs, require  # noqa: E402

LM_TASKS = ("lstm-ptb", "lstm-wt2", "lstm-text")
PANELS = (("epoch", "train_loss", "epochs", "training loss"), ("epoch", "val_ppl", "epochs", "validation perplexity"),
          ("wall_seconds", "train_loss", "wall-clock (s)", "training loss"),
          ("wall_seconds", "val_ppl", "wall-clock (s)", "validation perplexity"))


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


@FIGURES.register("celgc-lm")
def draw(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    runs = [r for r in load_runs(results, LM_TASKS, preset) if r.config["optimizer"]["name"] == "clipped-sgd"]
    require(runs, "clipped-sgd language-model runs", results,
            "run e.g. `repro run lstm-ptb --algo celgc --interval 4` and `--algo naive-parallel-clip` first")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.preset, run.config["world_size"]), []).append(run)
    for (task, preset_name, world), group in sorted(groups.items()):
        curves = latest_per_curve(group)
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
        for ax, (x, y, xlabel, ylabel) in zip(axes.flat, PANELS):
            for name, run in curves.items():
                m = run.metrics.dropna(subset=[y])
                style = dict(color="black", linestyle="--") if name.startswith("every") else {}
                ax.plot(m[x], m[y], marker="o", markersize=3, label=name + ("" if run.complete else " (partial)"), **style)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if y == "val_ppl":
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"CELGC on {task} ({preset_name} preset, N={world} workers)")
        fig.tight_layout()
        stem = out / f"celgc-lm_{task}_{preset_name}_N{world}"
        for ext in ("png", "pdf"):
            fig.savefig(stem.with_suffix(f".{ext}"), dpi=130)
        plt.close(fig)
        summary = summarize(curves)
        summary.to_csv(stem.with_suffix(".csv"), index=False)
        written += [stem.with_suffix(".png"), stem.with_suffix(".pdf"), stem.with_suffix(".csv")]
    return written


def summarize(curves: dict[str, Run]) -> pd.DataFrame:
    """Final numbers per curve and wall-clock speed-up against the every-step baseline."""
    rows = []
    for name, run in curves.items():
        last = run.metrics.iloc[-1]
        rows.append({"curve": name, "epochs": last["epoch"], "wall_seconds": last["wall_seconds"],
                     "train_loss": last["train_loss"], "val_ppl": last["val_ppl"],
                     "test_ppl": last.get("test_ppl"), "comm_rounds": last["comm_rounds"],
                     "comm_bytes": last["comm_bytes"], "complete": run.complete, "run": run.path.name})
    table = pd.DataFrame(rows)
    base = table[table["curve"].str.startswith("every")]
    if not base.empty:
        per_epoch = table["wall_seconds"] / table["epochs"]
        table["speedup_vs_every_step"] = (base["wall_seconds"].iloc[0] / base["epochs"].iloc[0]) / per_epoch
    return table
