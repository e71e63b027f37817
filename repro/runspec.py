"""Resolve what the user asked for into a validated RunConfig (repro/config.py).

Precedence, for every value: a flag  >  the recipe (or the recorded run given as TASK)  >  the default (the
task's Options dataclass, the builder's keyword defaults, TrainSettings). Validation happens here, in the launching
process, so bad input fails with one line before any worker starts or anything is written.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from repro import components, recipes
from repro.algorithms import ALGORITHMS
from repro.config import ComponentSection, RunConfig, TaskSection, TrainSettings, make_train
from repro.errors import UsageError
from repro.registry import check_kwargs
from repro.task import TASKS


@dataclass(init=False)
class RunRequest:
    """What the user asked for; ``None`` / empty means: take the recipe's value, else the default."""

    task: str  # a task name, or a recipe name (which names its task)
    preset: str | None  # recipe alias; "quick" when neither a recipe nor a recorded run is given
    algo: str | None  # an entry of repro.algorithms.ALGORITHMS
    components: dict  # kind -> component name (--KIND NAME)
    options: dict  # kind -> {KEY: VALUE} (--KIND-opt; the kind's section fields, e.g. param_groups, too)
    task_options: dict  # --set KEY=VALUE, --data-dir
    train: dict  # --epochs, --machines, --seed, --train-opt KEY=VALUE
    base: RunConfig | None  # `repro run RUN_DIR`: a recorded run's settings take the recipe's place

    def __init__(self, task: str, preset: str | None = None, algo: str | None = None, components: dict | None = None,
                 options: dict | None = None, task_options: dict | None = None, train: dict | None = None,
                 base: RunConfig | None = None, **by_kind):
        """``by_kind``: a kind's choice by its own keywords: ``optimizer="adamw"``, ``sync_options={...}`` or the
        section's spelling (``hparams={...}``), a section field (``param_groups="..."``)."""
        self.task, self.preset, self.algo, self.base = task, preset, algo, base
        self.components = dict(components or {})
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.task_options, self.train = dict(task_options or {}), dict(train or {})
        for kind in _table():
            if by_kind.get(kind.name) is not None:
                self.components[kind.name] = by_kind.pop(kind.name)
            by_kind.pop(kind.name, None)
            keys = [f"{kind.name}_options", kind.options_key] + [name for name, _ in kind.fields]
            for key in dict.fromkeys(keys):
                if key in by_kind:
                    value = by_kind.pop(key)
                    if value is not None:
                        given = value if isinstance(value, dict) else {key: value}
                        self.options.setdefault(kind.name, {}).update(given)
        if by_kind:
            raise TypeError(f"RunRequest got unexpected keywords {', '.join(sorted(by_kind))}")


def _table() -> tuple[components.Kind, ...]:
    return components.KINDS


def _layer(kind: components.Kind, name: str, base_name: str, base_options: dict, flags: dict) -> dict:
    """default < base (only when the base names the same component) < flags; unknown keys rejected; flag values
    take the types the builder declares."""
    builder = kind.builder(name)
    flags = components.typed(flags, components.hints_of(builder), f"{kind.label} {name}")
    given = {**(base_options if name == base_name else {}), **flags}
    check_kwargs(kind.label, name, builder, given)
    return {**kind.defaults(name), **given}


def _choose_base(req: RunRequest, algo) -> tuple[str, dict, TaskSection]:
    """(task name, the base's sections as config.json has them, the task section's labels) from a recorded run, a
    recipe name or a preset."""
    if req.base is not None:
        if req.preset is not None:
            raise UsageError("a recorded run brings its own recipe: --preset does not apply")
        if req.task not in (req.base.task.name, req.base.task.recipe):
            raise UsageError(f"the recorded run is of task {req.base.task.name}, not {req.task}")
        base = req.base.to_dict()
        base["task"] = base["task"]["options"]
        return req.base.task.name, base, TaskSection(req.base.task.name, {}, req.base.task.preset, req.base.task.recipe)
    if req.task in recipes.RECIPES and req.task not in TASKS:
        if req.preset is not None:
            raise UsageError(f"{req.task} is a recipe: --preset does not apply")
        recipe = recipes.RECIPES.get(req.task)
        return recipe.tasks[0], _as_recorded(recipe.sections()), TaskSection(recipe.tasks[0], {}, recipe.preset, recipe.name)
    TASKS.get(req.task)  # unknown task: one line naming the known ones
    algo_optimizer = algo.choice("optimizer") if algo is not None else None
    opt_choice = req.components.get("optimizer") or (algo_optimizer[0] if algo_optimizer else None)
    recipe = recipes.by_preset(req.task, req.preset or "quick", opt_choice)
    return req.task, _as_recorded(recipe.sections()), TaskSection(req.task, {}, req.preset or "quick", recipe.name)


def _as_recorded(sections: dict) -> dict:
    """A recipe's sections ({"name": ..., options...}) in config.json's shape ({"name", options key, fields})."""
    out = copy.deepcopy(sections)
    for kind in _table():
        if kind.name in out:
            options = dict(out[kind.name])
            name = options.pop("name", kind.default)
            fields = {f: options.pop(f) for f, _ in kind.fields if f in options}
            out[kind.name] = {"name": name, kind.options_key: options, **fields}
    return out


def _component(kind: components.Kind, req: RunRequest, algo, base: dict, origin: str) -> ComponentSection:
    """One kind's section: the flag's component, else the algorithm's, else the base's; its options layered."""
    recorded = ComponentSection.from_dict(kind, base.get(kind.name))
    chosen = algo.choice(kind.name) if algo is not None else None
    name = req.components.get(kind.name) or (chosen[0] if chosen else None) or recorded.name
    flags = dict(req.options.get(kind.name, {}))
    if chosen and name == chosen[0]:
        flags = {**chosen[1], **flags}
    fields = {**recorded.fields, **{f: flags.pop(f) for f, _ in kind.fields if f in flags}}
    options = _layer(kind, name, recorded.name, recorded.options, flags)
    if name != recorded.name and recorded.options and not flags and sys.stderr.isatty():
        print(f"note: {origin} is written for {kind.label} {recorded.name}; {name} takes its own defaults "
              f"({', '.join(f'{k}={v}' for k, v in options.items())})", file=sys.stderr)
    return ComponentSection(kind.name, name, options, fields)


def resolve(req: RunRequest) -> RunConfig:
    algo = ALGORITHMS.get(req.algo) if req.algo is not None else None
    task_name, base, task_section = _choose_base(req, algo)
    task_cls = TASKS.get(task_name)
    origin = task_section.recipe or "the recorded run"
    sections = {kind.name: _component(kind, req, algo, base, origin) for kind in _table()}

    train_flags = components.typed(req.train, components.hints_of(TrainSettings), "train setting")
    train_values = {**base.get("train", {}), **train_flags}
    if train_flags.get("max_steps") is not None and "eval_batches" not in train_flags:
        train_values["eval_batches"] = 20  # a smoke test should not spend minutes scoring the full test set
    train = make_train(train_values, task_section.recipe or task_name)
    train.validate()
    if train.channels_last and not task_cls.takes_channels_last:
        raise UsageError(f"--channels-last applies to image tasks; {task_name} has no channels_last form")

    task_flags = components.typed(req.task_options, components.hints_of(task_cls.Options), "task option")
    options = dataclasses.asdict(task_cls.parse_options({**base.get("task", {}), **task_flags}))
    task_section.options = options
    config = RunConfig(task=task_section, components=sections, train=train)
    for kind in _table():  # the checks that need the values: the kind's, then the component's own against the run
        section = sections[kind.name]
        if kind.check is not None:
            kind.check(section.name, section.options, section.fields, config)
        check_config = getattr(kind.builder(section.name), "check_config", None)
        if check_config is not None:  # e.g. a sync policy that refuses an optimizer taking several gradients a step
            check_config(section.options, config)
    return config


def load_recorded(run_dir: Path) -> RunConfig:
    """The settings of a recorded run (`repro run RUN_DIR` replays it)."""
    path = Path(run_dir) / "config.json" if Path(run_dir).is_dir() else Path(run_dir)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read a run config from {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return RunConfig.from_dict(data)
    except (KeyError, TypeError) as e:
        raise UsageError(f"{path} is not a repro run config ({e})") from None


def prepare_data(config: RunConfig) -> RunConfig:
    """Find, download and checksum the data once, before workers start (raises UsageError)."""
    task_cls = TASKS.get(config.task.name)
    options = task_cls.prepare(task_cls.parse_options(config.task.options))
    config = copy.deepcopy(config)
    config.task.options = dataclasses.asdict(options)
    return config
