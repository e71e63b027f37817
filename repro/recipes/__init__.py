"""Recipes: a paper's exact settings, by name, with the source of each value beside it.

One module per paper plus standard settings (imagenet.py); each registers its recipes here, and the papers are
registered in ``PAPERS`` (`repro list`). A recipe fills the sections of a run config (the task, each kind of the
component table in repro/components.py, train; see repro/config.py); flags override it:

    flag  >  recipe  >  default (the task's Options dataclass, the builder's keyword defaults, TrainSettings)

`--preset NAME` is a short alias: it picks the task's recipe registered under that preset for the chosen optimizer
(`for_optimizers`), else the task's default recipe for that preset. A recipe's optimizer hyperparameters apply only
to its own optimizer: another optimizer starts from its builder's defaults (a paper's lambda for AdamW never
becomes SGD's weight decay).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from repro.errors import UsageError
from repro.registry import Registry

RECIPES: Registry["Recipe"] = Registry("recipe", package=__name__)


@dataclass(frozen=True)
class Paper:
    id: str  # the short name claims and experiments use (P1, ...)
    citation: str  # authors: short title, venue year (a recipe's `source`)


PAPERS: Registry[Paper] = Registry("paper")


def paper(id: str, citation: str) -> str:
    """Register a paper the project reproduces; returns its citation (what recipes give as their source)."""
    PAPERS.register(id, Paper(id, citation))
    return citation


P1 = paper("P1", "Liu, Zhuang, Lei, Liao: CELGC, NeurIPS 2022")
P2 = paper("P2", "Zhuang, Liu, Cutkosky, Orabona: AdamW through proximal methods and scale-freeness, TMLR 2022")
P3 = paper("P3", "Zhuang, Cutkosky, Orabona: SGDOL, ICML 2019")


@dataclass(frozen=True)
class Recipe:
    name: str
    tasks: tuple[str, ...]  # the tasks it is written for
    summary: str
    source: str  # the paper, or "laptop scale" for quick settings
    optimizer: dict  # {"name": ..., hparams...}
    task: dict = field(default_factory=dict)
    sync: dict = field(default_factory=lambda: {"name": "none"})
    schedule: dict = field(default_factory=lambda: {"name": "constant"})
    train: dict = field(default_factory=dict)
    components: dict = field(default_factory=dict)  # the other kinds of the component table it names: kind -> {"name", options}
    preset: str | None = None  # the --preset alias it answers to
    for_optimizers: tuple[str, ...] = ()  # with --preset: chosen for these optimizers; () = the default recipe

    def sections(self) -> dict:
        """The sections it fills: the task's options, one ``{"name": ..., options...}`` per kind it names, train."""
        return {"task": self.task, "optimizer": self.optimizer, "sync": self.sync, "schedule": self.schedule,
                **self.components, "train": self.train}


def register(recipe: Recipe) -> Recipe:
    return RECIPES.register(recipe.name, recipe)


def for_task(task: str) -> list[Recipe]:
    return [RECIPES.get(n) for n in RECIPES.names() if task in RECIPES.get(n).tasks]


def presets_of(task: str) -> list[str]:
    return sorted({r.preset for r in for_task(task) if r.preset})


def by_preset(task: str, preset: str, optimizer: str | None) -> Recipe:
    """The recipe `--preset preset` means for ``task`` with ``optimizer`` (None: the default recipe's own)."""
    candidates = [r for r in for_task(task) if r.preset == preset]
    if not candidates:
        known = ", ".join(presets_of(task)) or "none"
        raise UsageError(f"unknown preset {preset!r} for {task} (known: {known})")
    if optimizer is not None:
        for recipe in candidates:
            if optimizer in recipe.for_optimizers:
                return recipe
    defaults = [r for r in candidates if not r.for_optimizers]
    if len(defaults) != 1:
        raise ValueError(f"{task}: preset {preset!r} needs exactly one default recipe, has {len(defaults)}")
    return defaults[0]
