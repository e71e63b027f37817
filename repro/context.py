"""Who a worker is: the run context every builder that asks for it receives.

A builder asks by taking a keyword parameter named ``context`` (``registry.FRAMEWORK_ARGS`` keeps it out of the
settings, the CLI flags and ``config.json``)::

    @SYNC_POLICIES.register("gossip")
    def gossip(topology: str = "ring", context: RunContext | None = None): ...

``call_with_context(builder, context, **options)`` passes it to builders that take it and not to others. No
component reads torch.distributed's globals or environment variables to learn its rank, the world size, its role or
its device: it reads its context.

- ``rank``, ``world``: this process and the number of processes (all nodes).
- ``roles``: one role per rank (``roles[r]``), ``"honest"`` unless a component assigns another (``"faulty"``,
  ``"server"``, ``"client"``, ...). Components that give ranks roles register an assigner (``assigns_roles``): a
  function of the run spec and the world size returning ``{rank: role}``, run by the worker before any builder.
  Metrics report bytes per role when a run has several; the default mask of a sync policy leaves ``faulty`` ranks
  out of every reduction of the epoch's metrics.
- ``groups``: process groups a component owns, made collectively by ``context.group(name, ranks)`` (every rank calls
  it, in the same order: torch's ``new_group`` is a collective) and kept for the run. Make them in ``wrap()`` or
  later, never in a builder: builders also run in the launcher to validate settings (``RunContext.plan``), where
  no process group exists.
- ``device``: where this rank's tensors live (a CUDA device per local rank, or the CPU).
- ``seed``: the run's seed (the same on every rank); ``rank_seed`` is this rank's own stream's.

``RunContext.plan(world, seed)`` is the launcher's context for validation: rank 0 of ``world``, no process group
(``planning`` is True; ``group()`` refuses). ``RunContext.current()`` reads the process group torch has (for code
outside a run: tests, benchmarks).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import torch

DEFAULT_ROLE = "honest"
FAULTY_ROLE = "faulty"

RoleAssigner = Callable[[dict, int], dict]
_ROLE_ASSIGNERS: list[RoleAssigner] = []


@dataclass(frozen=True)
class RunContext:
    rank: int
    world: int
    roles: tuple[str, ...]
    groups: dict = field(default_factory=dict, compare=False)  # name -> (ranks, ProcessGroup), filled by group()
    device: torch.device = torch.device("cpu")
    seed: int = 0
    planning: bool = False  # built by the launcher to validate settings: no process group, never communicate

    def __post_init__(self):
        if not (0 <= self.rank < self.world):
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")
        if len(self.roles) != self.world:
            raise ValueError(f"{len(self.roles)} roles for a world of {self.world}")

    # -- building ----------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, rank: int, world: int, device, seed: int, roles: dict[int, str] | Iterable[str] | None = None,
              planning: bool = False) -> "RunContext":
        """A context; ``roles``: a role per rank, or ``{rank: role}`` for the ranks that are not ``honest``."""
        return cls(rank, world, _role_tuple(roles, world), {}, torch.device(device), int(seed), planning)

    @classmethod
    def plan(cls, world: int, seed: int = 0, spec: dict | None = None) -> "RunContext":
        """The launcher's context for validating builders: rank 0 of ``world``, roles from ``spec`` when given."""
        roles = assign_roles(spec, world) if spec is not None else None
        return cls.build(0, world, "cpu", seed, roles, planning=True)

    @classmethod
    def current(cls, device=None, seed: int = 0) -> "RunContext":
        """The context of torch's default process group (one process when there is none); every rank honest."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
        else:
            rank, world = 0, 1
        return cls.build(rank, world, device or "cpu", seed)

    def with_roles(self, roles: dict[int, str] | Iterable[str]) -> "RunContext":
        return replace(self, roles=_role_tuple(roles, self.world), groups=self.groups)

    # -- reading -----------------------------------------------------------------------------------------------
    @property
    def role(self) -> str:
        """This rank's role."""
        return self.roles[self.rank]

    def ranks(self, role: str) -> list[int]:
        return [r for r, name in enumerate(self.roles) if name == role]

    @property
    def role_names(self) -> list[str]:
        """The roles present, in order of their first rank."""
        return list(dict.fromkeys(self.roles))

    @property
    def rank_seed(self) -> int:
        """This rank's own random stream's seed (dropout masks, batch order): what the worker seeds torch with."""
        return self.seed + 1000 * self.rank

    @property
    def distributed(self) -> bool:
        """Several processes that communicate (not while planning)."""
        return self.world > 1 and not self.planning

    # -- process groups ----------------------------------------------------------------------------------------
    def group(self, name: str, ranks: Iterable[int] | None = None):
        """The process group ``name`` over ``ranks`` (default: all), made on first use by every rank (a
        collective: every rank calls it with the same arguments, in the same order) and kept for the run.
        ``name`` "world" with no ranks is torch's default group."""
        if self.planning:
            raise RuntimeError("a planning context has no process groups: make groups in wrap() or later")
        ranks = list(range(self.world)) if ranks is None else sorted(int(r) for r in ranks)
        if name in self.groups:
            made_ranks, group = self.groups[name]
            if made_ranks != ranks:
                raise ValueError(f"process group {name!r} was made over ranks {made_ranks}, asked over {ranks}")
            return group
        import torch.distributed as dist

        if not dist.is_initialized():
            group = None
        elif ranks == list(range(self.world)) and name == "world":
            group = dist.group.WORLD
        else:
            group = dist.new_group(ranks)
        self.groups[name] = (ranks, group)
        return group

    @property
    def world_group(self):
        return self.group("world") if self.distributed else None


def _role_tuple(roles, world: int) -> tuple[str, ...]:
    if roles is None:
        return (DEFAULT_ROLE,) * world
    if isinstance(roles, dict):
        out = [DEFAULT_ROLE] * world
        for rank, role in roles.items():
            if not 0 <= int(rank) < world:
                raise ValueError(f"role {role!r} given to rank {rank}, outside a world of {world}")
            out[int(rank)] = str(role)
        return tuple(out)
    return tuple(str(r) for r in roles)


def assigns_roles(fn: RoleAssigner) -> RoleAssigner:
    """Register ``fn(spec, world) -> {rank: role}``: the roles a component gives ranks (e.g. the last ``count``
    ranks ``faulty``, rank 0 ``server``), from the run spec alone, so every rank and the launcher agree. The module
    must be imported before the worker assigns roles (a component registry's package import does it)."""
    _ROLE_ASSIGNERS.append(fn)
    return fn


def assign_roles(spec: dict, world: int) -> dict[int, str]:
    """Every registered assigner's roles; two components giving one rank different roles is a UsageError."""
    from repro.errors import UsageError

    roles: dict[int, str] = {}
    for fn in _ROLE_ASSIGNERS:
        for rank, role in (fn(spec, world) or {}).items():
            rank = int(rank)
            if not 0 <= rank < world:
                raise UsageError(f"role {role} for rank {rank}: the run has {world} workers")
            if rank in roles and roles[rank] != role:
                raise UsageError(f"rank {rank} is given two roles, {roles[rank]} and {role}")
            roles[rank] = role
    return roles


def takes_context(builder: Callable) -> bool:
    try:
        return "context" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False


def call_with_context(builder: Callable, context: RunContext | None, *args, **options):
    """``builder(*args, **options)``, with ``context=`` added when the builder takes it (when none is given: the
    context of torch's default process group, ``RunContext.current()``)."""
    if takes_context(builder):
        return builder(*args, context=context if context is not None else RunContext.current(), **options)
    return builder(*args, **options)
