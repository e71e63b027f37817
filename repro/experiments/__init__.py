"""Experiments: a paper figure or table as a named unit -- its settings (each a `repro run` command without the
seed), its seeds, its figures and the claims it checks (repro/claims.py).

One module per paper registers its experiments here. `repro reproduce NAME --scale quick|paper` runs the missing
cells (seed x setting) into RESULTS/NAME/SCALE/, draws the figures and rewrites the report; `repro report` judges
every claim from whatever runs exist. A setting's runs are found by the run identity without the seed
(`RunConfig.setting`), so runs made by hand with the same settings count too.

Tuned grids (against the winner's curse): settings that share a ``Setting.grid`` name are one tuned grid. Each of
them runs on the scale's ``selection_seeds`` only; ``Scale.choose`` then picks the grid's best cell from those runs
alone, and only that cell runs on the judging seeds (the next ``seeds`` seeds after the selection seeds), on which the
claims judge it. Settings without a grid (an untuned method) run on the judging seeds only. Until a grid's
selection runs are all complete its judging cells are unknown; `repro reproduce` runs the selection first, then
the chosen cells.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from repro.claims import INCONCLUSIVE, Claim, Evidence, Verdict
from repro.registry import Registry

EXPERIMENTS: Registry["Experiment"] = Registry("experiment", package=__name__)
# quick: the laptop; emulated-cluster: two network-namespace nodes on one quiet machine (repro/emulated_cluster.py);
# paper: the authors' setting (GPU boxes)
SCALES = ("quick", "emulated-cluster", "paper")


@dataclass(frozen=True)
class Setting:
    label: str  # the name figures and claims use
    argv: tuple[str, ...]  # `repro run` arguments: task or recipe first, never --seed
    grid: str = ""  # the tuned grid it belongs to ("" = not tuned: runs on the judging seeds only)
    minutes: float | None = None  # one run's estimate where it differs from the scale's (e.g. twice the gradients)
    seeds: int | None = None  # its judging seeds where its plan differs from the scale's (arms sized one by one)


@dataclass(frozen=True)
class Scale:
    settings: tuple[Setting, ...]
    seeds: int = 3  # judging seeds per judged setting (the most, where settings plan their own: Setting.seeds)
    minutes_per_run: float = 0.0  # one run on the reference 2-core CPU (quick) or one GPU box (paper): estimates
    why: str = ""  # why this setting: written before any of its runs, never retuned to agree with a paper
    launcher: str = ""  # "" = `repro run` per cell; "emulated-cluster" = each cell on two emulated nodes
    selection_seeds: tuple[int, ...] = (0,)  # where the settings of a grid run before one of them is chosen
    first_seed: int = 0  # a scale without grids judges seeds first_seed ..; those below it were a pilot's
    # (evidence of the selection seeds' runs, a grid's labels in grid order) -> the chosen label, or None while a
    # selection run is missing; required when the scale has grids
    choose: Callable[[Evidence, list[str]], str | None] | None = None

    def __post_init__(self):
        over = [s.label for s in self.settings if s.seeds and s.seeds > self.seeds]
        if over:
            raise ValueError(f"settings plan more judging seeds than their scale's {self.seeds}: {', '.join(over)}")

    def grids(self) -> dict[str, list[str]]:
        """Each tuned grid's labels, in grid order."""
        grids: dict[str, list[str]] = {}
        for setting in self.settings:
            if setting.grid:
                grids.setdefault(setting.grid, []).append(setting.label)
        return grids

    def judging_seeds(self, seeds: int | None = None) -> list[int]:
        """The ``seeds`` (default: the scale's) fresh seeds the claims judge: the first ones after the selection
        seeds when the scale has grids, else first_seed .. first_seed + seeds - 1."""
        start = max(self.selection_seeds) + 1 if self.grids() else self.first_seed
        return list(range(start, start + (seeds or self.seeds)))

    def plan_text(self) -> str:
        """ "6 settings x 41 seeds", or where settings plan their own seeds "20 settings, 3-24 seeds each"."""
        own = {s.seeds or self.seeds for s in self.settings}
        if len(own) <= 1:
            return f"{len(self.settings)} settings x {self.seeds} seeds"
        return f"{len(self.settings)} settings, {min(own)}-{max(own)} seeds each"

    def setting_seeds(self, setting: Setting, seeds: int | None = None) -> list[int]:
        """The judging seeds ``setting`` runs: ``seeds`` when given (a --seeds override), else its own plan's, else
        the scale's."""
        return self.judging_seeds(seeds or setting.seeds)

    def chosen(self, ev: Evidence) -> dict[str, str | None]:
        """Each grid's chosen label (None while its selection is incomplete), from the selection seeds' runs only."""
        selection = of_seeds(ev, self.selection_seeds)
        return {grid: self.choose(selection, labels) for grid, labels in self.grids().items()}

    def minutes(self, setting: Setting) -> float:
        return self.minutes_per_run if setting.minutes is None else setting.minutes


@dataclass(frozen=True)
class Experiment:
    name: str
    paper: str  # the id of a paper in repro.recipes.PAPERS (`repro list`)
    summary: str  # the figure or table of the paper it reproduces
    scales: dict[str, Scale]
    claims: tuple[Claim, ...] = ()
    figures: tuple[str, ...] = ()  # figure names (repro/figures/), drawn from the experiment's own folder
    extra_figure_args: dict = field(default_factory=dict)

    def folder(self, results: Path, scale: str) -> Path:
        return Path(results) / self.name / scale

    def cells(self, scale: str, seeds: int | None = None, ev: Evidence | None = None) -> list[tuple[Setting, int]]:
        """Every (setting, seed) of ``scale`` known so far: without grids, every setting on seeds 0 .. seeds-1; with
        grids, each grid setting on the selection seeds, the untuned settings on the judging seeds, and each grid's
        chosen setting (from the selection runs in ``ev``) on the judging seeds."""
        spec = self.scales[scale]
        judged = set(s.label for s in spec.settings if not s.grid)
        if spec.grids():
            judged |= {label for label in spec.chosen(ev or Evidence({})).values() if label}
        selection = [(s, seed) for seed in spec.selection_seeds for s in spec.settings if s.grid]
        judging = {s.label: set(spec.setting_seeds(s, seeds)) for s in spec.settings if s.label in judged}
        return selection + [(s, seed) for seed in spec.judging_seeds(seeds) for s in spec.settings
                            if seed in judging.get(s.label, ())]

    def pending_judging_runs(self, scale: str, seeds: int | None = None, ev: Evidence | None = None) -> int:
        """Judging runs not yet among ``cells``: those of the grids whose selection is incomplete."""
        spec = self.scales[scale]
        chosen = spec.chosen(ev or Evidence({})) if spec.grids() else {}
        return sum(1 for label in chosen.values() if label is None) * len(spec.judging_seeds(seeds))


GRID_VALUE_FLAGS = ("--lr", "--weight-decay", "--loss-multiplier", "--interval")  # a grid's axes: the same code otherwise


def rehearsal_settings(settings) -> list[Setting]:
    """One setting per shape: settings that differ only in the values of GRID_VALUE_FLAGS start the same code, so a
    rehearsal (two steps on the CPU) of one stands for all of them."""
    shapes: dict[tuple, Setting] = {}
    for setting in settings:
        argv = list(setting.argv)
        shape = tuple("*" if i > 0 and argv[i - 1] in GRID_VALUE_FLAGS else a for i, a in enumerate(argv))
        shapes.setdefault(shape, setting)
    return list(shapes.values())


def register(experiment: Experiment) -> Experiment:
    for scale, spec in experiment.scales.items():
        if spec.grids() and spec.choose is None:
            raise ValueError(f"{experiment.name} {scale}: a scale with tuned grids needs `choose`")
    return EXPERIMENTS.register(experiment.name, experiment)


def on_planned_seeds(experiment: Experiment) -> Experiment:
    """``experiment`` with every claim judging only the runs of its scale's planned seeds (the selection seeds of a
    scale with grids, and the judging seeds): a run on another seed -- a pilot's, or one from `repro reproduce
    --seeds 60` -- never enters a verdict. For judges written without a scale's plan at hand."""
    def planned(judge: Callable[[Evidence], Verdict]) -> Callable[[Evidence], Verdict]:
        def judge_planned(ev: Evidence) -> Verdict:
            spec = experiment.scales.get(ev.scale)
            if spec is None:  # evidence of no scale (a judge called directly): as given
                return judge(ev)
            seeds = spec.judging_seeds() + (list(spec.selection_seeds) if spec.grids() else [])
            return judge(of_seeds(ev, seeds))
        return judge_planned
    return replace(experiment, claims=tuple(replace(c, judge=planned(c.judge)) for c in experiment.claims))


def of_seeds(ev: Evidence, seeds: Iterable[int]) -> Evidence:
    """The same evidence with only the runs of ``seeds`` (selection seeds apart from judging seeds)."""
    keep = set(seeds)
    return Evidence({label: [run for run in runs if run.seed in keep] for label, runs in ev.runs.items()}, ev.scale)


def selection_incomplete(spec: Scale, chosen: dict[str, str | None],
                         measured: str = "no judging runs yet") -> Verdict | None:
    """The verdict while some tuned grid lacks runs on the selection seeds (its judged cell is not known yet)."""
    missing = [grid for grid, label in chosen.items() if label is None]
    if not missing:
        return None
    return Verdict(INCONCLUSIVE, measured, f"selection incomplete: {', '.join(missing)} lack runs on seed(s) "
                                           f"{', '.join(map(str, spec.selection_seeds))}")


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
    return Evidence(runs, scale), done

