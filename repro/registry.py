"""Name -> builder registries. The training loop looks components up here and never branches on names."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

from repro.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from public names to builders that rejects unknown and duplicate names."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self._package = package  # modules of this package register themselves on import
        self._loaded = package is None
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None):
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add(item) if item is not None else add

    def _load(self) -> None:
        # One new file in the package = one new entry: import every module once, lazily.
        if not self._loaded:
            self._loaded = True
            pkg = importlib.import_module(self._package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self._package}.{info.name}")

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UsageError(f"unknown {self.kind} {name!r} (known: {known})")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


# Arguments a builder receives from the framework rather than from settings.
FRAMEWORK_ARGS = ("params", "epochs", "context", "faults")  # context: repro.context.RunContext; faults:
# repro.byzantine.FaultModel (the byzantine kind's, given to a sync policy whose exchange the faults act in)


def builder_defaults(fn: Callable) -> dict:
    """A builder's settings and their defaults (``inspect.Parameter.empty`` where required): the one place that
    reads signatures, so defaults are recorded in config.json instead of re-derived by readers."""
    import inspect

    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if name not in FRAMEWORK_ARGS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def check_kwargs(kind: str, name: str, fn: Callable, kwargs: dict) -> None:
    """Reject keyword arguments a builder does not take, naming them (a typo must not pass silently)."""
    accepted = builder_defaults(fn)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UsageError(f"{kind} {name!r} does not take {', '.join(unknown)} (it takes: {', '.join(accepted) or 'nothing'})")
