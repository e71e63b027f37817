"""Paper figures by name. Each module registers a function ``draw(results, out, preset=None) -> [paths]``
that reads run directories with pandas and writes PNG + PDF files."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from repro.registry import Registry

FIGURES: Registry[Callable] = Registry("figure", package=__name__)


def save_figure(fig, stem: Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf, close the figure, return both paths."""
    import matplotlib.pyplot as plt

    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=130)
    plt.close(fig)
    return paths
