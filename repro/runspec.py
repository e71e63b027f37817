"""Turn a task's preset plus the user's flags into a resolved, validated run spec (plain JSON data).

Validation happens here, in the launching process, so bad input fails with one line before any worker
starts or anything is written.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field

import torch

from repro import optim, schedules, sync
from repro.errors import UsageError
from repro.runlog import config_hash
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
    """What the user asked for; ``None`` means: take the preset's value."""

    task: str
    preset: str = "quick"
    algo: str | None = None
    optimizer: str | None = None
    hparams: dict = field(default_factory=dict)  # only the flags the user gave
    sync: str | None = None
    sync_options: dict = field(default_factory=dict)
    schedule: str | None = None
    task_options: dict = field(default_factory=dict)
    machines: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    eval_batches: int | None = None
    seed: int | None = None
    loss_multiplier: float | None = None  # scale the training objective (AdamW paper's scale-freeness test)
    log_stats: list[int] | None = None  # epochs (1-based) whose gradient/update magnitudes are recorded


def _accepted(fn) -> set[str]:
    return set(inspect.signature(fn).parameters) - {"params", "epochs"}


def _split(section: dict) -> tuple[str, dict]:
    section = dict(section)
    return section.pop("name"), section


def resolve(req: RunRequest) -> dict:
    task_cls = TASKS.get(req.task)
    if req.preset not in task_cls.presets:
        raise UsageError(f"unknown preset {req.preset!r} for {req.task} (known: {', '.join(sorted(task_cls.presets))})")
    preset = copy.deepcopy(task_cls.presets[req.preset])

    opt_default, sync_default = None, None
    if req.algo is not None:
        if req.algo not in ALGORITHMS:
            raise UsageError(f"unknown algo {req.algo!r} (known: {', '.join(sorted(ALGORITHMS))})")
        opt_default, sync_default = ALGORITHMS[req.algo]

    # Optimizer: preset hyperparameters apply where the chosen optimizer takes them; the user's must apply.
    opt_name = req.optimizer or opt_default or preset["optimizer"]["name"]
    # A preset may hold a variant per optimizer, merged section by section over its base: the AdamW paper's
    # best (lr, lambda) per optimizer, or, on ResNet-56, the CELGC paper's whole setting for clipped SGD.
    for section, values in preset.get("by_optimizer", {}).get(opt_name, {}).items():
        preset[section] = {**preset.get(section, {}), **values}
    _, opt_preset = _split(preset["optimizer"])
    accepted = optim.accepted_hparams(opt_name)
    hparams = {k: v for k, v in opt_preset.items() if k in accepted}
    hparams.update(req.hparams)
    optim.make(opt_name, [torch.zeros(1, requires_grad=True)], **hparams)  # validates names and values

    sync_name, sync_preset = _split(preset.get("sync", {"name": "none"}))
    sync_name = req.sync or sync_default or sync_name
    accepted = _accepted(sync.SYNC_POLICIES.get(sync_name))
    bad = sorted(set(req.sync_options) - accepted)
    if bad:
        raise UsageError(f"--{bad[0]} does not apply to sync policy {sync_name!r}")
    sync_options = {k: v for k, v in sync_preset.items() if k in accepted} | req.sync_options
    sync.make(sync_name, **sync_options)

    train = preset.get("train", {})
    epochs = req.epochs if req.epochs is not None else train.get("epochs", 1)
    machines = req.machines if req.machines is not None else train.get("machines", 1)
    seed = req.seed if req.seed is not None else train.get("seed", 0)
    if epochs < 1:
        raise UsageError(f"epochs must be >= 1, got {epochs}")
    if machines < 1:
        raise UsageError(f"machines must be >= 1, got {machines}")
    if req.max_steps is not None and req.max_steps < 1:
        raise UsageError(f"max-steps must be >= 1, got {req.max_steps}")
    eval_batches = req.eval_batches
    if eval_batches is None and req.max_steps is not None:
        eval_batches = 20  # a smoke test should not spend minutes scoring the full test set
    if eval_batches is not None and eval_batches < 1:
        raise UsageError(f"eval-batches must be >= 1, got {eval_batches}")

    sched_name, sched_options = _split(preset.get("schedule", {"name": "constant"}))
    if req.schedule is not None and req.schedule != sched_name:
        sched_name, sched_options = req.schedule, {}
    schedules.make(sched_name, epochs, **sched_options)

    task_options = dataclasses.asdict(task_cls.parse_options({**preset.get("task", {}), **req.task_options}))
    return {
        "task": {"name": req.task, "preset": req.preset, "options": task_options},
        "optimizer": {"name": opt_name, "hparams": hparams},
        "sync": {"name": sync_name, "options": sync_options},
        "schedule": {"name": sched_name, "options": sched_options},
        "train": {"epochs": epochs, "max_steps": req.max_steps, "eval_batches": eval_batches, "seed": seed,
                  "machines": machines,
                  "average_after_nonmono": train.get("average_after_nonmono", 0), **_extra_train(req, train)},
    }


def _extra_train(req: RunRequest, train: dict) -> dict:
    """Loss multiplier and stats epochs, validated; left out at their defaults so the identities of runs
    that use neither stay what they were."""
    extra = {}
    mult = req.loss_multiplier if req.loss_multiplier is not None else train.get("loss_multiplier", 1.0)
    if not (float(mult) > 0 and float(mult) != float("inf")):
        raise UsageError(f"loss-multiplier must be a finite number > 0, got {mult}")
    if float(mult) != 1.0:
        extra["loss_multiplier"] = float(mult)
    if req.log_stats:
        bad = [e for e in req.log_stats if e < 1]
        if bad:
            raise UsageError(f"log-stats epochs count from 1, got {bad[0]}")
        extra["log_stats"] = sorted(set(req.log_stats))
    return extra


def prepare_data(spec: dict) -> dict:
    """Find, download and checksum the data once, before workers start (raises UsageError)."""
    task_cls = TASKS.get(spec["task"]["name"])
    options = task_cls.prepare(task_cls.parse_options(spec["task"]["options"]))
    spec = copy.deepcopy(spec)
    spec["task"]["options"] = dataclasses.asdict(options)
    return spec


# Task options that locate things but do not change results stay out of a run's identity.
LOCATION_OPTIONS = ("data_dir",)


def identity(spec: dict, world_size: int) -> str:
    ident = copy.deepcopy({k: spec[k] for k in ("task", "optimizer", "sync", "schedule", "train")})
    for key in LOCATION_OPTIONS:
        ident["task"]["options"].pop(key, None)
    ident["train"]["world_size"] = world_size
    return config_hash(ident)


def label(spec: dict, world_size: int) -> str:
    parts = [spec["optimizer"]["name"], spec["sync"]["name"]]
    if "interval" in spec["sync"]["options"]:
        parts[-1] += f"-I{spec['sync']['options']['interval']}"
    parts += [f"N{world_size}", spec["task"]["preset"]]
    return "_".join(parts)
