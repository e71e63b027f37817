"""Resolve what the user asked for into a validated RunConfig (repro/config.py).

Precedence, for every value: a flag  >  the recipe (or the recorded run given by `--from`)  >  the default (the
task's Options dataclass, the builder's keyword defaults, TrainSettings). Validation happens here, in the launching
process, so bad input fails with one line before any worker starts or anything is written.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from repro import optim, recipes, schedules, sync
from repro.config import (PARAM_GROUP_MODES, ComponentSection, OptimizerSection, RunConfig, TaskSection,
                          make_train)
from repro.errors import UsageError
from repro.registry import builder_defaults, check_kwargs
from repro.task import TASKS

# Paper algorithms as (optimizer, sync policy) pairs; explicit --optimizer / --sync flags override them.
ALGORITHMS: dict[str, tuple[str, str]] = {
    "celgc": ("clipped-sgd", "periodic"),  # communication-efficient local gradient clipping
    "naive-parallel-clip": ("clipped-sgd", "every-step"),  # the CELGC paper's baseline
    "local-sgd": ("sgd", "periodic"),
    "minibatch-sgd": ("sgd", "every-step"),
}


@dataclass
class RunRequest:
    """What the user asked for; ``None`` / empty means: take the recipe's value, else the default."""

    task: str  # a task name, or a recipe name (which names its task)
    preset: str | None = None  # recipe alias; "quick" when neither a recipe nor --from is given
    algo: str | None = None
    optimizer: str | None = None
    hparams: dict = field(default_factory=dict)  # --lr, --clip, ... and --opt KEY=VALUE
    sync: str | None = None
    sync_options: dict = field(default_factory=dict)  # --interval and --sync-opt KEY=VALUE
    schedule: str | None = None
    schedule_options: dict = field(default_factory=dict)  # --sched-opt KEY=VALUE
    task_options: dict = field(default_factory=dict)  # --set KEY=VALUE, --batch-size, --no-bn, --data-dir
    train: dict = field(default_factory=dict)  # --epochs, --machines, --seed, --max-steps, ...
    param_groups: str | None = None
    base: RunConfig | None = None  # `--from RUN_DIR`: a recorded run's settings take the recipe's place


def _split(section: dict) -> tuple[str, dict]:
    section = dict(section)
    return section.pop("name"), section


def _layer(name: str, kind: str, builder, base_name: str, base_options: dict, flags: dict) -> dict:
    """default < base (only when the base names the same component) < flags; unknown keys rejected."""
    given = {**(base_options if name == base_name else {}), **flags}
    check_kwargs(kind, name, builder, given)
    defaults = {k: v for k, v in builder_defaults(builder).items() if v is not inspect.Parameter.empty}
    return {**defaults, **given}


def _choose_base(req: RunRequest) -> tuple[str, dict, TaskSection]:
    """(task name, the base's sections, the task section's labels) from --from, a recipe name or a preset."""
    if req.base is not None:
        if req.task not in (req.base.task.name, req.base.task.recipe) or req.preset is not None:
            raise UsageError(f"--from gives task {req.base.task.name}: leave out TASK and --preset, or name that task")
        base = req.base.to_dict()
        base["optimizer"] = {"name": base["optimizer"]["name"], **base["optimizer"]["hparams"]}
        base["sync"] = {"name": base["sync"]["name"], **base["sync"]["options"]}
        base["schedule"] = {"name": base["schedule"]["name"], **base["schedule"]["options"]}
        base["task"] = base["task"]["options"]
        return req.base.task.name, base, TaskSection(req.base.task.name, {}, req.base.task.preset, req.base.task.recipe)
    if req.task in recipes.RECIPES and req.task not in TASKS:
        if req.preset is not None:
            raise UsageError(f"{req.task} is a recipe: --preset does not apply")
        recipe = recipes.RECIPES.get(req.task)
        return recipe.tasks[0], copy.deepcopy(recipe.sections()), TaskSection(recipe.tasks[0], {}, recipe.preset, recipe.name)
    TASKS.get(req.task)  # unknown task: one line naming the known ones
    opt_choice = req.optimizer or (ALGORITHMS[req.algo][0] if req.algo in ALGORITHMS else None)
    recipe = recipes.by_preset(req.task, req.preset or "quick", opt_choice)
    return req.task, copy.deepcopy(recipe.sections()), TaskSection(req.task, {}, req.preset or "quick", recipe.name)


def resolve(req: RunRequest) -> RunConfig:
    if req.algo is not None and req.algo not in ALGORITHMS:
        raise UsageError(f"unknown algo {req.algo!r} (known: {', '.join(sorted(ALGORITHMS))})")
    algo_opt, algo_sync = ALGORITHMS.get(req.algo, (None, None))
    task_name, base, task_section = _choose_base(req)
    task_cls = TASKS.get(task_name)

    base_opt_name, base_hparams = _split(base["optimizer"])
    opt_name = req.optimizer or algo_opt or base_opt_name
    hparams = _layer(opt_name, "optimizer", optim.OPTIMIZERS.get(opt_name), base_opt_name, base_hparams, req.hparams)
    if opt_name != base_opt_name and not req.hparams and sys.stderr.isatty():
        print(f"note: {task_section.recipe or 'the recorded run'} is written for {base_opt_name}; {opt_name} takes "
              f"its own defaults ({', '.join(f'{k}={v}' for k, v in hparams.items())})", file=sys.stderr)
    optim.validate(opt_name, **hparams)
    param_groups = req.param_groups or base.get("param_groups", "all")
    if param_groups not in PARAM_GROUP_MODES:
        raise UsageError(f"param-groups must be one of {', '.join(PARAM_GROUP_MODES)}, got {param_groups!r}")

    base_sync_name, base_sync = _split(base.get("sync", {"name": "none"}))
    sync_name = req.sync or algo_sync or base_sync_name
    sync_options = _layer(sync_name, "sync policy", sync.SYNC_POLICIES.get(sync_name), base_sync_name, base_sync,
                          req.sync_options)
    sync.make(sync_name, **sync_options)

    base_sched_name, base_sched = _split(base.get("schedule", {"name": "constant"}))
    sched_name = req.schedule or base_sched_name
    sched_options = _layer(sched_name, "schedule", schedules.SCHEDULES.get(sched_name), base_sched_name, base_sched,
                           req.schedule_options)

    train_values = {**base.get("train", {}), **req.train}
    if req.train.get("max_steps") is not None and "eval_batches" not in req.train:
        train_values["eval_batches"] = 20  # a smoke test should not spend minutes scoring the full test set
    train = make_train(train_values, task_section.recipe or task_name)
    train.validate()
    if train.channels_last and not task_cls.takes_channels_last:
        raise UsageError(f"--channels-last applies to image tasks; {task_name} has no channels_last form")
    schedules.make(sched_name, train.epochs, **sched_options)

    options = dataclasses.asdict(task_cls.parse_options({**base.get("task", {}), **req.task_options}))
    task_section.options = options
    return RunConfig(task=task_section, optimizer=OptimizerSection(opt_name, hparams, param_groups),
                     sync=ComponentSection(sync_name, sync_options), schedule=ComponentSection(sched_name, sched_options),
                     train=train)


def load_recorded(run_dir: Path) -> RunConfig:
    """The settings of a recorded run (`repro run --from RUN_DIR`)."""
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
