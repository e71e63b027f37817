"""The component table: the kinds of component a run is composed of, each with its registry.

Every kind has a section in a run config (``{name, options}``; repro/config.py) and two flags of `repro run` and
`repro sweep`: ``--KIND NAME`` and ``--KIND-opt KEY=VALUE``. Resolution (repro/runspec.py), defaults, the run
identity, the run folder's label and the flags (repro/cli.py) loop over ``KINDS``; none of them names a kind. A new
kind is a registry plus one entry below; a new component of a kind is one file that registers its builder, whose
keyword arguments are its options.

Checks before any worker starts: the kind's ``check(name, options, fields, config)``, then the component's own
``check_config(options, config)`` where its builder has one (a check against the other sections of the run).

A kind added later than identity version 2 enters a run's identity only where a run chooses something other than
its default, so runs recorded before the kind existed keep their identities (`repro report`, `repro run RUN_DIR` and
`--skip-completed` still find them).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from repro.errors import UsageError


@dataclass(frozen=True)
class Kind:
    name: str  # the section of config.json and the flags --NAME, --NAME-opt
    registry_path: str  # "module:attribute" of its Registry, imported when first needed (most import torch)
    default: str  # the component of a run (or an older config) that names none
    help: str  # what a component of this kind decides (the flag's help; the names come from the registry)
    options_key: str = "options"  # the section's field of builder options ("hparams": the optimizer's, since v1)
    fields: tuple[tuple[str, Any], ...] = ()  # the section's other fields with their defaults (settable by --KIND-opt)
    flag_aliases: tuple[str, ...] = ()  # other spellings of --NAME
    opt_aliases: tuple[str, ...] = ()  # other spellings of --NAME-opt
    label_options: tuple[tuple[str, str], ...] | None = None  # in the run folder's name: None = no; else the
    # component's name followed by these options, each with its prefix (("interval", "I") -> periodic-I4)
    hashed_at_default: bool = False  # in the identity even at its default (the kinds identity version 2 knew)
    check: Callable[[str, dict, dict, Any], None] | None = None  # (name, options, fields, config): the checks
    # beyond the builder's keywords (values, other sections); raises UsageError

    @property
    def registry(self):
        module, attribute = self.registry_path.split(":")
        return getattr(importlib.import_module(module), attribute)

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def opt_flag(self) -> str:
        return f"--{self.name}-opt"

    @property
    def label(self) -> str:
        """How messages name the kind ("sync policy"): the registry's own word."""
        return self.registry.kind

    def builder(self, name: str):
        return self.registry.get(name)

    def keywords(self, name: str) -> dict:
        """Component ``name``'s options with their defaults (``inspect.Parameter.empty`` where required)."""
        from repro.registry import builder_defaults

        return builder_defaults(self.builder(name))

    def defaults(self, name: str) -> dict:
        return {k: v for k, v in self.keywords(name).items() if v is not inspect.Parameter.empty}

    def field_defaults(self) -> dict:
        return dict(self.fields)


def _check_optimizer(name: str, options: dict, fields: dict, config) -> None:
    from repro import optim
    from repro.config import PARAM_GROUP_MODES

    optim.validate(name, **options)
    if fields["param_groups"] not in PARAM_GROUP_MODES:
        raise UsageError(f"param-groups must be one of {', '.join(PARAM_GROUP_MODES)}, got {fields['param_groups']!r}")


def _check_sync(name: str, options: dict, fields: dict, config) -> None:
    from repro import byzantine, sync
    from repro.context import RunContext

    # the run's world (one node's machines: the workers check again with the real world) and its faulty ranks
    world = config.train.machines
    faults = byzantine.fault_model(config.byzantine.to_dict() if "byzantine" in config.components else None, world)
    sync.make(name, context=RunContext.plan(world, config.train.seed), faults=faults, **options)


def _check_byzantine(name: str, options: dict, fields: dict, config) -> None:
    from repro import byzantine
    from repro.task import TASKS

    # the count and the policy taking faults are checked with the sync section (_check_sync, which runs first)
    faults = byzantine.fault_model({"name": name, "options": options, **fields}, config.train.machines)
    if faults is None:
        return
    if "strategy" in config.components and config.strategy.name != "none":
        raise UsageError(f"faulty workers act in the robust sync policy's exchange, not among federated clients "
                         f"(--strategy {config.strategy.name})")
    if faults.behaviour.acts_on == "labels" and not getattr(TASKS.get(config.task.name), "flips_labels", False):
        raise UsageError(f"byzantine {name}: task {config.task.name} has no labels to flip")


def _check_partition(name: str, options: dict, fields: dict, config) -> None:
    from repro import partition
    from repro.task import TASKS

    partition.validate(name, **options)
    if name != "iid" and not hasattr(TASKS.get(config.task.name), "use_shard"):
        raise UsageError(f"partition {name}: task {config.task.name} cannot train on a share of its data (iid only)")


def _check_strategy(name: str, options: dict, fields: dict, config) -> None:
    from repro.federated.loop import check_section

    check_section(name, options, fields, config)


def _check_schedule(name: str, options: dict, fields: dict, config) -> None:
    from repro import schedules

    schedules.make(name, config.train.epochs, **options)


KINDS: tuple[Kind, ...] = (
    Kind("optimizer", "repro.optim:OPTIMIZERS", "sgd", "The optimizer (overrides --algo); another optimizer than the "
         "recipe's starts from its own defaults", options_key="hparams", fields=(("param_groups", "all"),),
         opt_aliases=("--opt",), label_options=(), hashed_at_default=True, check=_check_optimizer),
    Kind("sync", "repro.sync:SYNC_POLICIES", "none",
         "How workers communicate (overrides --algo)", label_options=(("interval", "I"),), hashed_at_default=True,
         check=_check_sync),
    Kind("schedule", "repro.schedules:SCHEDULES", "constant", "The step-size schedule over epochs",
         flag_aliases=("--scheduler",), opt_aliases=("--sched-opt",), hashed_at_default=True, check=_check_schedule),
    Kind("byzantine", "repro.byzantine:BEHAVIOURS", "none", "Faulty workers' behaviour (the last `count` ranks, "
         "--byzantine-opt count=K; acts in --sync robust's exchange)", fields=(("count", 0),),
         label_options=(("count", "x"),), check=_check_byzantine),
    Kind("partition", "repro.partition:PARTITIONS", "iid", "How the training set is split over workers",
         label_options=(("alpha", "a"),), check=_check_partition),
    Kind("strategy", "repro.federated.strategies:STRATEGIES", "none", "Federated clients on an emulated clock "
         "(docs/federated.md; the partition splits the data over the clients); none = no clients",
         fields=(("clients", 10), ("spread", 0.0), ("local_steps", 10), ("horizon", 100.0), ("eval_every", 10.0)),
         label_options=(("c", "c"), ("dt", "dt")), check=_check_strategy),
)
KIND_NAMES = tuple(k.name for k in KINDS)

# The KEY=VALUE flags of `repro run` that are not a kind's: the task's options, TrainSettings, and how a run is
# carried out (not part of what it computes). `repro sweep` makes one cell per value of such a key.
SETTING_FLAGS = {"task": ("--task-opt", "--set"), "train": ("--train-opt",), "run": ("--run-opt",)}


def kind(name: str) -> Kind:
    for k in KINDS:
        if k.name == name:
            return k
    raise KeyError(name)


def key_value_flags() -> tuple[str, ...]:
    """Every flag that takes KEY=VALUE, aliases included."""
    flags = [f for names in SETTING_FLAGS.values() for f in names]
    for k in KINDS:
        flags += [k.opt_flag, *k.opt_aliases]
    return tuple(flags)


# Typed values -----------------------------------------------------------------------------------------------------
def typed(values: dict, hints: dict, what: str) -> dict:
    """``values`` (as parsed from KEY=VALUE text: int, float, bool, str or a list) converted to the types ``hints``
    declares (a builder's or a dataclass's annotations): an int where a float is declared becomes that float (so
    `--opt clip=1` is the same setting as the old `--clip 1`), one value where a list is declared a list of one, a
    float with no fractional part where an int is declared that int. Values of undeclared or other types are left
    as they are; a value that cannot be converted is a one-line error."""
    out = {}
    for key, value in values.items():
        hint = hints.get(key)
        out[key] = value if hint is None else _convert(value, hint, f"{what}: {key}")
    return out


def hints_of(obj) -> dict:
    """The resolved annotations of a function or dataclass; {} where they cannot be resolved."""
    try:
        hints = typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001 - an annotation naming what this module cannot see: leave values untyped
        return {}
    if dataclasses.is_dataclass(obj):
        return {f.name: hints[f.name] for f in dataclasses.fields(obj) if f.name in hints}
    return hints


def _convert(value, hint, what: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _convert(value, options[0], what) if len(options) == 1 else value
    if origin in (list, tuple) or hint in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else None
        return [(_convert(v, inner, what) if inner is not None else v) for v in items]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and not isinstance(value, bool):
        if not value.is_integer():
            raise UsageError(f"{what} must be a whole number, got {value}")
        return int(value)
    if hint is bool and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value
