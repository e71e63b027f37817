"""Paper figures by name. Each module registers a function ``draw(results, out, preset=None) -> [paths]``
that reads run directories with pandas and writes PNG + PDF files."""
from __future__ import annotations

from typing import Callable

from repro.registry import Registry

FIGURES: Registry[Callable] = Registry("figure", package=__name__)
