"""`repro plot` without a figure name: every figure that the runs under a results folder allow.

A results folder holds runs as RESULTS/TASK/RUN/ and, written by `repro reproduce`, experiments' own folders
RESULTS/EXPERIMENT/SCALE/TASK/RUN/ (any other folder holding TASK/RUN/ runs, e.g. a hand-made RESULTS/seed-check/,
counts too). Each such folder is drawn on its own, as `repro plot FIGURE --results FOLDER` would: an experiment's
folder gets its experiment's figures (as `repro reproduce` draws them), any other folder every figure. A figure
with nothing to draw from a folder raises UsageError (its one-line reason); that is not a failure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from repro.errors import UsageError


@dataclass
class Source:
    """A folder of TASK/RUN/ runs, the figures to try on it, and where they go."""
    runs: Path
    figures: tuple[str, ...]
    out: Path


@dataclass
class Outcome:
    drawn: list[tuple[str, Source, list[Path]]] = field(default_factory=list)
    not_drawn: dict[str, str] = field(default_factory=dict)  # figure -> why, for figures drawn from no folder
    failed: list[tuple[str, Source, str]] = field(default_factory=list)  # a bug or unreadable files, not "no runs"


def run_folders(results: Path) -> list[Path]:
    """Every folder under ``results`` (itself included) that holds runs as TASK/RUN/config.json, shallowest first."""
    found = {config.parents[2] for config in results.rglob("config.json")
             if len(config.relative_to(results).parts) >= 3}
    return sorted(found, key=lambda p: (len(p.relative_to(results).parts), str(p)))


def sources(results: Path, out: Path | None) -> list[Source]:
    """``results``'s run folders with their figures; ``out`` (default: each folder's figures/) mirrors the folders'
    layout below ``results`` so that two folders' figures of the same name never overwrite each other."""
    from repro.experiments import EXPERIMENTS
    from repro.figures import FIGURES

    folders = run_folders(results)
    if folders and folders[0] != results:  # every figure is tried on RESULTS, so each one not drawn gets its reason
        folders.insert(0, results)
    experiment_figures = {exp.folder(results, scale): exp.figures
                          for exp in map(EXPERIMENTS.get, EXPERIMENTS.names()) for scale in exp.scales}
    return [Source(folder, experiment_figures.get(folder, tuple(FIGURES.names())),
                   (out / folder.relative_to(results)) if out else folder / "figures")
            for folder in folders]


def draw_every(results: Path, out: Path | None = None, preset: str | None = None) -> Outcome:
    """Draw each source's figures; a figure that no folder's runs allow gets the reason its first folder gave."""
    from repro.figures import FIGURES
    from repro.runlog import check_writable

    found = sources(results, out)
    if not found:
        raise UsageError(f"no runs under {results} (no TASK/RUN/config.json below it): nothing to plot; run e.g. "
                         "`repro run TASK` or `repro reproduce EXPERIMENT` first, or point --results at a results "
                         "folder")
    outcome = Outcome()
    reasons: dict[str, str] = {}
    for source in found:
        check_writable(source.out)
        for figure in source.figures:
            try:
                paths = FIGURES.get(figure)(source.runs, source.out, preset=preset)
            except UsageError as e:
                reasons.setdefault(figure, str(e))
                continue
            except Exception as e:  # noqa: BLE001 -- one figure's bug must not keep the others from being drawn
                outcome.failed.append((figure, source, f"{type(e).__name__}: {' '.join(str(e).split())}"))
                continue
            if paths:
                outcome.drawn.append((figure, source, list(paths)))
            else:
                reasons.setdefault(figure, f"no runs for it under {source.runs}")
    drawn = {figure for figure, _, _ in outcome.drawn}
    failed = {figure for figure, _, _ in outcome.failed}
    outcome.not_drawn = {f: why for f, why in sorted(reasons.items()) if f not in drawn and f not in failed}
    return outcome
