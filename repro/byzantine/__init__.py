"""Faulty (Byzantine) workers' behaviours: one file each, a registry.

Vector attacks (``sign-flip``, ``alie``, ``foe``, ``noise``, ``mimic``) forge what the faulty workers send from what
the honest ones send: ``attack(name, honest_vectors, f, **opts)`` on an (h, d) tensor returns the (f, d) faulty
vectors. They are omniscient and deterministic (noise draws from its ``seed``), so every rank computes the same
vectors from the same gathered honest vectors and no extra message is needed. Two behaviours act elsewhere:
``label-flip`` (a faulty worker trains on flipped labels: a task capability) and ``crash`` (from step ``at_step``
the faulty rows are frozen or dropped; a real crash would end a torch.distributed run). Farhadkhani et al.
(ICML 2023) apply the attacks to the exchanged models; see docs/decentralized.md.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from repro.context import FAULTY_ROLE, assigns_roles
from repro.errors import UsageError
from repro.registry import Registry, check_kwargs


Forge = Callable[[torch.Tensor, int], torch.Tensor]  # (honest (h, d), f) -> the f faulty vectors (f, d)


@dataclass(frozen=True)
class Behaviour:
    """A behaviour with its options: ``forge`` for vector attacks; None where ``acts_on`` is "labels" (the task's
    training labels), "exchange" (the policy's rows: crash) or "nothing" (no faults)."""
    name: str
    acts_on: str
    forge: Forge | None
    options: dict


# name -> builder(**options) -> Behaviour: a builder's keyword arguments are the behaviour's options (the component
# table reads them); it checks their values.
BEHAVIOURS: Registry[Callable[..., Behaviour]] = Registry("byzantine behaviour", package=__name__)


def register(name: str, acts_on: str = "vectors"):
    """Register ``builder(**options)``, which checks the options and returns the forge (vector attacks) or None."""
    def add(builder):
        @functools.wraps(builder)  # the signature (the options) is the builder's
        def make(**options) -> Behaviour:
            return Behaviour(name, acts_on, builder(**options), options)

        BEHAVIOURS.register(name, make)
        return builder
    return add


def validate(name: str, **opts) -> Behaviour:
    """The behaviour ``name`` with ``opts``, checked (unknown names, options and values are one-line errors)."""
    make = BEHAVIOURS.get(name)
    check_kwargs("byzantine behaviour", name, make, opts)
    return make(**opts)


def attack(name: str, honest_vectors: torch.Tensor, f: int, **opts) -> torch.Tensor:
    """The ``f`` faulty vectors (f, d) that behaviour ``name`` sends, given the honest (h, d) vectors."""
    behaviour = validate(name, **opts)
    if behaviour.forge is None:
        raise UsageError(f"byzantine {name} acts on the {behaviour.acts_on}, not on exchanged vectors: "
                         "it has no attack vector to compute")
    if honest_vectors.dim() != 2 or honest_vectors.shape[0] < 1:
        raise UsageError(f"attack wants an (h, d) tensor of h >= 1 honest vectors, got shape {tuple(honest_vectors.shape)}")
    if not isinstance(f, int) or f < 0:
        raise UsageError(f"the number of faulty vectors must be an integer >= 0, got {f!r}")
    if f == 0:
        return honest_vectors.new_empty(0, honest_vectors.shape[1])
    return behaviour.forge(honest_vectors, f)


@dataclass(frozen=True)
class FaultModel:
    """The run's faulty workers: behaviour ``name`` with its ``options`` on ``ranks`` (the last ``count``)."""
    name: str
    options: dict
    ranks: tuple[int, ...]

    @property
    def behaviour(self) -> Behaviour:
        return validate(self.name, **self.options)

    def forge(self, honest: torch.Tensor, step: int, seed: int, aggregator: str, declared_f: int) -> torch.Tensor:
        """The faulty rows of this step, the same on every rank: ``search="auto"`` line-searches against the
        policy's own aggregator and f; noise draws from the run's seed and the step."""
        opts = dict(self.options)
        if opts.get("search") == "auto":
            opts["search"] = aggregator
            if opts.get("declared_f") is None:
                opts["declared_f"] = declared_f
        if self.name == "noise":
            opts["seed"] = (int(seed) * 1_000_003 + int(opts.get("seed", 0)) * 7_919 + int(step)) % (2 ** 63)
        return attack(self.name, honest, len(self.ranks), **opts)


def fault_model(section: dict | None, world: int) -> FaultModel | None:
    """The fault model of a run's ``byzantine`` section ({"name", "options", "count"}), or None for no faults."""
    if not section or section.get("name", "none") == "none":
        count = (section or {}).get("count", 0)
        if count:
            raise UsageError(f"byzantine count={count} needs a behaviour (--byzantine NAME): "
                             f"{', '.join(n for n in BEHAVIOURS.names() if n != 'none')}")
        return None
    count = section.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise UsageError(f"byzantine count must be an integer >= 0, got {count!r}")
    if count > world:
        raise UsageError(f"byzantine count={count}: more faulty ranks than the run's {world} workers")
    if count == world:
        raise UsageError(f"byzantine count={count}: every one of the {world} workers would be faulty")
    options = dict(section.get("options") or {})
    validate(section["name"], **options)  # its values too
    return FaultModel(section["name"], options, tuple(range(world - count, world)))


@assigns_roles
def faulty_roles(spec: dict, world: int) -> dict[int, str]:
    """The last ``count`` ranks are faulty: the same on every rank and in the launcher."""
    faults = fault_model(spec.get("byzantine"), world)
    return {r: FAULTY_ROLE for r in faults.ranks} if faults else {}


def repeated(vector: torch.Tensor, f: int) -> torch.Tensor:
    """f copies of one forged vector (the authors' attacks send the same vector from every faulty worker)."""
    return vector.unsqueeze(0).expand(f, -1).clone()


def line_maximize(score: Callable[[float], float], evals: int = 16, start: float = 0.0, delta: float = 1.0,
                  ratio: float = 0.8) -> float:
    """Best-effort argmax of ``score`` over x >= 0 in ``evals`` evaluations: double the step while the score
    grows, then shrink it by ``ratio`` around the best point (the search the authors use for ALIE's and FOE's
    factors)."""
    best_x, best_y = start, score(start)
    evals -= 1
    probe = best_x
    while evals > 0:  # expansion
        probe = best_x + delta
        y = score(probe)
        evals -= 1
        if y > best_y:
            best_x, best_y = probe, y
            delta *= 2
        else:
            delta *= ratio
            break
    while evals > 0:  # contraction around the best point
        if probe < best_x:
            probe += delta
        else:
            x = probe - delta
            while x < 0:
                x = (x + probe) / 2
            probe = x
        y = score(probe)
        evals -= 1
        if y > best_y:
            best_x, best_y = probe, y
        delta *= ratio
    return best_x


def searched_factor(honest: torch.Tensor, direction: torch.Tensor, f: int, aggregator: str, declared_f: int | None,
                    evals: int) -> float:
    """The factor c >= 0 for which sending mean + c * direction moves ``aggregator``'s output furthest from the
    honest mean (averaged over the honest workers' own views for rules that depend on who aggregates)."""
    from repro import robust

    if aggregator == "auto":
        raise UsageError('search="auto" line-searches against a sync policy\'s aggregator: name one to call attack()')
    declared = f if declared_f is None else declared_f
    mean = honest.mean(dim=0)
    rule = robust.AGGREGATORS.get(aggregator)
    views = range(honest.shape[0]) if rule.needs_own else [0]

    def displacement(c: float) -> float:
        vectors = torch.cat([honest, repeated(mean + c * direction, f)])
        out = torch.stack([robust.aggregate(aggregator, vectors, declared, i) for i in views]).mean(dim=0)
        gap = out - mean
        return float(gap.dot(gap))

    return line_maximize(displacement, evals=evals)


def check_search(search: str | None, evals: int) -> None:
    """A line search's aggregator (a known one, or "auto": the sync policy's) and evaluation budget."""
    if not isinstance(evals, int) or isinstance(evals, bool) or evals < 1:
        raise UsageError(f"evals (line-search evaluations) must be an integer >= 1, got {evals!r}")
    if search is not None and search != "auto":
        from repro import robust

        robust.AGGREGATORS.get(search)  # unknown: a one-line error naming the known ones


def normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(max(p, 1e-12), 1 - 1e-12))


__all__ = ["BEHAVIOURS", "Behaviour", "FaultModel", "fault_model", "faulty_roles", "attack", "validate", "register", "line_maximize"]
