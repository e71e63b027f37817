"""The typed run configuration: what `config.json` holds and what every worker receives.

Shape (version 3), one section per kind of the component table (repro/components.py), each value resolved and
written out, builder defaults included:

    task      {name, preset, recipe, options}     options: the task's Options dataclass
    optimizer {name, hparams, param_groups}       hparams: every keyword the optimizer's builder takes
    sync      {name, options}                     options: every keyword the sync policy's builder takes
    schedule  {name, options}
    <kind>    {name, options, <the kind's fields>} for every later kind of the table
    train     TrainSettings (below)

Version 1 (before this module) had the first sections with only the values a preset or flag gave; `from_dict`
upgrades it by filling in the defaults, so old run folders load for `repro plot` and `repro run RUN_DIR`. Version 2
had the first three kinds only: a kind a config has no section for (written before the kind existed) reads as that
kind's default component, so version 2 reads (and resumes) as it is. A repro older than version 3 refuses version 3
configs instead of silently dropping the sections it does not know.

The run identity hashes only values that differ from their defaults (and leaves out where data lives and what
the setting is called), so adding a field with a default never changes the identity of runs made before it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from repro import components
from repro.errors import UsageError

CONFIG_VERSION = 3
RESUMABLE_SINCE = 2  # configs `repro resume` continues: version 2 is version 3 with the first three kinds only
IDENTITY_VERSION = 2
# Task options that locate data but do not change results.
LOCATION_OPTIONS = ("data_dir",)
EVAL_SYNC_MODES = ("copy", "in-place")
PARAM_GROUP_MODES = ("all", "no-decay-bias-norm")
PAIRING_MODES = ("fresh-batch", "same-batch")


@dataclass
class TrainSettings:
    """How long and how many: every field has its default here and is recorded in config.json."""

    epochs: int = 1
    machines: int = 1  # worker processes per node: the papers' "machines" (world size = machines x nodes)
    seed: int = 0
    max_steps: int | None = None  # stop after this many steps per worker (smoke tests)
    eval_batches: int | None = None  # score only this many evaluation batches per worker and split
    average_after_nonmono: int = 0  # > 0: evaluate averaged iterates once val loss stalls this many epochs
    loss_multiplier: float = 1.0  # the optimizer sees c x the objective (AdamW paper's scale-freeness test)
    log_stats: list[int] = field(default_factory=list)  # epochs whose gradient/update histograms are recorded
    # "copy": evaluate the workers' average in a separate copy (training undisturbed);
    # "in-place": average the training models before evaluating (the CELGC LM code does this every epoch)
    eval_sync: str = "copy"
    # How the gradient evaluations of one optimizer step (SGDOL takes two) get their data: "fresh-batch": each draws
    # the next minibatch; "same-batch": all of a step's evaluations reuse the batch its first one drew (the SGDOL
    # authors' MNIST code; only dropout masks differ). Optimizers that evaluate once per step are unaffected.
    pairing: str = "fresh-batch"
    # GPU numerics and speed (recorded: they change the numbers). tf32: TF32 matmuls and convolutions on Ampere+;
    # deterministic: deterministic kernels only (cuDNN, cuBLAS workspace, torch.use_deterministic_algorithms);
    # compile: torch.compile of the training forward; channels_last: the CNNs' weights and images in NHWC memory
    # format (what cuDNN's fastest convolutions want; kernels differ, so results are not bitwise the same).
    tf32: bool = False
    deterministic: bool = False
    compile: bool = False
    channels_last: bool = False

    def validate(self) -> None:
        for name in ("epochs", "machines"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_batches"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise UsageError(f"{name.replace('_', '-')} must be >= 1, got {value}")
        mult = float(self.loss_multiplier)
        if not (mult > 0 and mult != float("inf")):
            raise UsageError(f"loss-multiplier must be a finite number > 0, got {self.loss_multiplier}")
        self.loss_multiplier = mult
        bad = [e for e in self.log_stats if e < 1]
        if bad:
            raise UsageError(f"log-stats epochs count from 1, got {bad[0]}")
        self.log_stats = sorted(set(self.log_stats))
        for name in ("tf32", "deterministic", "compile", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.eval_sync not in EVAL_SYNC_MODES:
            raise UsageError(f"eval_sync must be one of {', '.join(EVAL_SYNC_MODES)}, got {self.eval_sync!r}")
        if self.pairing not in PAIRING_MODES:
            raise UsageError(f"pairing must be one of {', '.join(PAIRING_MODES)}, got {self.pairing!r}")


def train_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainSettings)}


def make_train(values: dict, what: str) -> TrainSettings:
    unknown = sorted(set(values) - train_fields())
    if unknown:
        raise UsageError(f"{what}: unknown train setting(s) {', '.join(unknown)} (known: {', '.join(sorted(train_fields()))})")
    return TrainSettings(**values)


@dataclass
class TaskSection:
    name: str
    options: dict
    preset: str | None = None  # the --preset alias that chose the recipe, if any
    recipe: str | None = None  # the named setting the values came from


@dataclass
class ComponentSection:
    """One kind's section (repro/components.py): the component's name, its builder's options, the kind's other
    fields (the optimizer's param_groups). In config.json: ``{name, <the kind's options key>: options, **fields}``."""

    kind: str
    name: str
    options: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)

    def __getattr__(self, key: str):
        # the kind's spellings: config.optimizer.hparams (its options key), config.optimizer.param_groups (a field)
        if key.startswith("__") or key in ("kind", "name", "options", "fields"):
            raise AttributeError(key)
        if key == components.kind(self.kind).options_key:
            return self.options
        if key in self.fields:
            return self.fields[key]
        raise AttributeError(f"{self.kind} section has no {key!r}")

    def to_dict(self) -> dict:
        return {"name": self.name, components.kind(self.kind).options_key: copy.deepcopy(self.options),
                **copy.deepcopy(self.fields)}

    @classmethod
    def from_dict(cls, kind: components.Kind, data: dict | None) -> "ComponentSection":
        data = data or {"name": kind.default}
        return cls(kind.name, data.get("name", kind.default), dict(data.get(kind.options_key, {})),
                   {name: data.get(name, default) for name, default in kind.fields})


@dataclass
class RunConfig:
    """The task, one section per kind of the component table (``config.optimizer``, ``config.sync``, ...), train."""

    task: TaskSection
    components: dict  # kind name -> ComponentSection, in the table's order
    train: TrainSettings
    version: int = CONFIG_VERSION

    def __getattr__(self, key: str) -> ComponentSection:
        sections = self.__dict__.get("components")
        if sections is not None and key in sections:
            return sections[key]
        raise AttributeError(key)

    def to_dict(self) -> dict:
        return {"task": dataclasses.asdict(self.task),
                **{name: section.to_dict() for name, section in self.components.items()},
                "train": dataclasses.asdict(self.train), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Read a config.json (any version), filling in what older versions left out: a kind's section a config
        lacks (a kind added after it was written) is the kind's default component."""
        version = data.get("version", 1)
        if version > CONFIG_VERSION:
            raise UsageError(f"config version {version} is newer than this repro ({CONFIG_VERSION}): upgrade repro")
        task = data["task"]
        train = {k: v for k, v in data.get("train", {}).items() if k in train_fields()}
        config = cls(
            task=TaskSection(task["name"], dict(task.get("options", {})), task.get("preset"), task.get("recipe")),
            components={k.name: ComponentSection.from_dict(k, data.get(k.name)) for k in components.KINDS},
            train=TrainSettings(**train),
        )
        missing = [k.name for k in components.KINDS if k.name not in data]
        if version < 2 or missing:
            config.fill_defaults(None if version < 2 else missing)
        return config

    def fill_defaults(self, kinds: list[str] | None = None) -> None:
        """Write out every builder default not given (version-1 configs recorded only what was given)."""
        for k in components.KINDS:
            if kinds is None or k.name in kinds:
                section = self.components[k.name]
                section.options = {**k.defaults(section.name), **section.options}

    def identity(self, world_size: int) -> str:
        """Which runs are the same experiment: a hash of the values that differ from their defaults."""
        from repro.task import TASKS

        task_defaults = {f.name: _field_default(f) for f in dataclasses.fields(TASKS.get(self.task.name).Options)}
        train_defaults = {f.name: _field_default(f) for f in dataclasses.fields(TrainSettings)}
        settings = {
            "identity_version": IDENTITY_VERSION,
            "task": [self.task.name, _non_default(self.task.options, task_defaults, skip=LOCATION_OPTIONS)],
            "train": _non_default(dataclasses.asdict(self.train), train_defaults, skip=("machines",)),
            "world_size": world_size,
        }
        for k in components.KINDS:
            section = self.components[k.name]
            entry = [section.name, _non_default(section.options, k.keywords(section.name))]
            entry += [value if not _same(value, default) else None
                      for (name, default), value in zip(k.fields, (section.fields[f] for f, _ in k.fields))]
            at_default = section.name == k.default and not entry[1] and not any(entry[2:])
            if k.hashed_at_default or not at_default:  # a later kind at its default: old identities unchanged
                settings[k.name] = entry
        return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def setting(self, world_size: int) -> str:
        """Which runs are repeats of one setting with other seeds: the identity with the seed left out."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=TrainSettings.seed)).identity(world_size)

    def label(self, world_size: int) -> str:
        """The run folder's readable name: the components the table shows, N, the preset or recipe."""
        parts = []
        for k in components.KINDS:
            section = self.components[k.name]
            if k.label_options is not None and (k.hashed_at_default or section.name != k.default):
                values = {**section.fields, **section.options}  # a field (byzantine count) labels too
                parts.append(section.name + "".join(f"-{prefix}{values[key]}" for key, prefix
                                                    in k.label_options if key in values))
        parts += [f"N{world_size}", self.task.preset or self.task.recipe or "custom"]
        return "_".join(parts)


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _same(a, b) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _non_default(values: dict, defaults: dict, skip: tuple[str, ...] = ()) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(values.items())
            if k not in skip and not (k in defaults and _same(v, defaults[k]))}
