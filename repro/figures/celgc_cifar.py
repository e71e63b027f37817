"""CELGC (Liu et al. 2022) on CIFAR: training loss and test accuracy against epochs and wall-clock, one curve
per communication interval I plus the every-step baseline (``celgc-cifar``), and the parallel speed-up:
training loss against iterations per worker for N workers vs 1 worker (``celgc-speedup``)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from repro.figures import FIGURES, save_figure  # noqa: E402
from repro.figures._curves import complete_or_all, curve_name, draw_interval_curves, plot_band  # noqa: E402
from repro.results import Run, by_setting, load_runs, require  # noqa: E402
from repro.seeds import curve as seed_curve  # noqa: E402

RUNNING = "running training loss (epoch's batches)"
WHOLE = "training loss (whole set, averaged model)"


def panels(loss: str, label: str) -> tuple:
    return (("epoch", loss, "epochs", label), ("epoch", "test_acc", "epochs", "test accuracy"),
            ("wall_seconds", loss, "wall-clock (s)", label), ("wall_seconds", "test_acc", "wall-clock (s)", "test accuracy"))



def _clipped_image_runs(results: Path, preset: str | None) -> list[Run]:
    runs = [r for r in load_runs(results, None, preset)
            if r.config["optimizer"]["name"] == "clipped-sgd" and "test_acc" in r.metrics.columns]
    require(runs, "clipped-sgd image-classification runs", results,
            "run e.g. `repro run resnet56-cifar10 --preset paper --algo celgc --interval 16` and "
            "`--algo naive-parallel-clip` first")
    return runs


@FIGURES.register("celgc-cifar")
def draw(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    runs = _clipped_image_runs(results, preset)
    # The authors' "training loss" scores the whole training set with the averaged model (score_trainset); runs
    # without it show the running mean over the epoch's batches, labelled as such.
    whole = all("trainset_loss" in r.metrics and r.metrics["trainset_loss"].notna().any() for r in runs)
    loss = "trainset_loss" if whole else "train_loss"
    return draw_interval_curves(runs, out, "celgc-cifar", panels(loss, WHOLE if whole else RUNNING),
                                log_y={loss}, summary_columns=(loss, "test_acc"))


def iterations_to(metrics: pd.DataFrame, target: float) -> float:
    """Iterations per worker at which the running training loss first reaches ``target``: each epoch's mean loss
    placed halfway through its iterations, linearly interpolated around the crossing (the P1-parallel claim's
    measure, repro/experiments/celgc.py); NaN if never reached."""
    from repro.experiments.celgc import first_reach, mid_epoch_iterations

    iters = mid_epoch_iterations(metrics["iteration"].astype(float).tolist())
    return first_reach(iters, metrics["train_loss"].astype(float).tolist(), target, higher_is_better=False)


@FIGURES.register("celgc-speedup")
def draw_speedup(results: Path, out: Path, preset: str | None = None) -> list[Path]:
    # Any clipped-sgd runs, language models included: the figure only needs iteration and train_loss.
    runs = [r for r in load_runs(results, None, preset) if r.config["optimizer"]["name"] == "clipped-sgd"]
    require(runs, "clipped-sgd runs", results, "run the same command with `--machines 1` and e.g. `--machines 4`")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups: dict[tuple, dict[int, list[Run]]] = {}
    seeds = by_setting(runs)
    for run in runs:  # oldest first: the setting of the newest run per world size wins
        worlds = groups.setdefault((run.task, run.preset, curve_name(run)), {})
        worlds[run.config["world_size"]] = complete_or_all(seeds[run.setting])
    for (task, preset_name, curve), by_world in sorted(groups.items()):
        if len(by_world) < 2 or 1 not in by_world:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        # The speed-up is read off each setting's mean curve over its seeds.
        means = {w: seed_curve(g, "iteration", "train_loss").rename(columns={"mean": "train_loss"})
                 for w, g in by_world.items()}
        finals = {w: float(m["train_loss"].iloc[-1]) for w, m in means.items()}
        target = max(finals.values())  # a loss every run reaches
        rows = []
        base_iters = iterations_to(means[1], target)
        for world, group in sorted(by_world.items()):
            plot_band(ax, group, "iteration", "train_loss", f"N={world}")
            iters = iterations_to(means[world], target)
            rows.append({"world_size": world, "final_train_loss": finals[world], "target_loss": target,
                         "iterations_to_target": iters, "speedup_vs_N1": base_iters / iters if iters else float("nan"),
                         "n": len(group), "runs": " ".join(r.path.name for r in group)})
        ax.set_xlabel("iterations per worker")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Parallel speed-up: {task}, {curve} ({preset_name})", fontsize=9)
        fig.tight_layout()
        stem = out / f"celgc-speedup_{task}_{preset_name}_{curve.replace('=', '').replace(' ', '-')}"
        written += save_figure(fig, stem)
        pd.DataFrame(rows).to_csv(stem.with_suffix(".csv"), index=False)
        written.append(stem.with_suffix(".csv"))
    if not written:
        require([], "clipped-sgd runs of one setting with N=1 and N>1 workers", results,
                "run the same command with `--machines 1` and e.g. `--machines 4`")
    return written
