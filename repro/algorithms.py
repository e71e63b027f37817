"""Paper algorithms as named choices of components (`--algo NAME`): one entry each.

An algorithm names a component for some kinds of the component table (repro/components.py), optionally with
options (``{"name": ..., KEY: VALUE}``). Explicit `--KIND` flags override it; its options apply only where its
component is the one chosen, and `--KIND-opt` flags override them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from repro.registry import Registry


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str
    components: dict = field(default_factory=dict)  # kind -> component name, or {"name": ..., options...}

    def choice(self, kind: str) -> tuple[str, dict] | None:
        """(component, options) this algorithm chooses for ``kind``, or None."""
        chosen = self.components.get(kind)
        if chosen is None:
            return None
        if isinstance(chosen, str):
            return chosen, {}
        options = dict(chosen)
        return options.pop("name"), options

    def describe(self) -> str:
        return " + ".join(name for name, _ in filter(None, (self.choice(k) for k in self.components)))


ALGORITHMS: Registry[Algorithm] = Registry("algo")


def register(algorithm: Algorithm) -> Algorithm:
    return ALGORITHMS.register(algorithm.name, algorithm)


register(Algorithm("celgc", "communication-efficient local gradient clipping (CELGC, NeurIPS 2022)",
                   {"optimizer": "clipped-sgd", "sync": "periodic"}))
register(Algorithm("naive-parallel-clip", "the CELGC paper's baseline: clipping after every-step gradient averaging",
                   {"optimizer": "clipped-sgd", "sync": "every-step"}))
register(Algorithm("local-sgd", "SGD with periodic model averaging", {"optimizer": "sgd", "sync": "periodic"}))
register(Algorithm("minibatch-sgd", "SGD with every-step gradient averaging", {"optimizer": "sgd", "sync": "every-step"}))
register(Algorithm("dpsgd", "decentralized parallel SGD: gossip with ring neighbours (D-PSGD, Lian et al., NeurIPS 2017)",
                   {"optimizer": "sgd", "sync": {"name": "gossip", "topology": "ring", "order": "lian"}}))
register(Algorithm("monna", "MoNNA: EMA momentum, half step, nearest-neighbour averaging of the exchanged models "
                   "(Farhadkhani et al., ICML 2023)", {"optimizer": "monna", "sync": {"name": "robust", "aggregator": "nna"}}))
