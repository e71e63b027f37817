"""Experiments: a paper figure or table as a named unit -- its settings (each a `repro run` command without the
seed), its seeds, its figures and the claims it checks (repro/claims.py).

One module per paper registers its experiments here. `repro reproduce NAME --scale quick|paper` runs the missing
cells (seed x setting) into RESULTS/NAME/SCALE/, draws the figures and rewrites the report; `repro report` judges
every claim from whatever runs exist. A setting's runs are found by the run identity without the seed
(`RunConfig.setting`), so runs made by hand with the same settings count too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from repro.claims import Claim, Evidence
from repro.registry import Registry

EXPERIMENTS: Registry["Experiment"] = Registry("experiment", package=__name__)
SCALES = ("quick", "paper")


@dataclass(frozen=True)
class Setting:
    label: str  # the name figures and claims use
    argv: tuple[str, ...]  # `repro run` arguments: task or recipe first, never --seed


@dataclass(frozen=True)
class Scale:
    settings: tuple[Setting, ...]
    seeds: int = 3
    minutes_per_run: float = 0.0  # one run on the reference 2-core CPU (quick) or one GPU box (paper): estimates
    why: str = ""  # why this setting: written before any of its runs, never retuned to agree with a paper


@dataclass(frozen=True)
class Experiment:
    name: str
    paper: str  # P1, P2 or P3
    summary: str  # the figure or table of the paper it reproduces
    scales: dict[str, Scale]
    claims: tuple[Claim, ...] = ()
    figures: tuple[str, ...] = ()  # figure names (repro/figures/), drawn from the experiment's own folder
    extra_figure_args: dict = field(default_factory=dict)

    def folder(self, results: Path, scale: str) -> Path:
        return Path(results) / self.name / scale

    def cells(self, scale: str, seeds: int | None = None) -> list[tuple[Setting, int]]:
        """Every (setting, seed) of ``scale``: seeds 0 .. seeds-1."""
        spec = self.scales[scale]
        return [(setting, seed) for seed in range(seeds or spec.seeds) for setting in spec.settings]


def register(experiment: Experiment) -> Experiment:
    return EXPERIMENTS.register(experiment.name, experiment)


def evidence(experiment: Experiment, scale: str, results: Path,
             setting_key: Callable[[list[str]], str]) -> tuple[Evidence, dict[tuple[str, int], Path]]:
    """The complete runs of each setting of ``experiment`` at ``scale`` under RESULTS/NAME/SCALE (by label), and
    which (label, seed) cells are done. ``setting_key(argv)`` resolves a setting's command to its setting key."""
    from repro.results import by_setting, load_runs

    folder = experiment.folder(results, scale)
    groups = by_setting([r for r in load_runs(folder) if r.complete]) if folder.is_dir() else {}
    runs, done = {}, {}
    for setting in experiment.scales[scale].settings:
        found = groups.get(setting_key(list(setting.argv)), [])
        runs[setting.label] = found
        for run in found:
            done[(setting.label, run.seed)] = run.path
    return Evidence(runs), done

