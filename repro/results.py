"""Reading run directories back (for figures and summaries)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from repro.errors import UsageError


@dataclass
class Run:
    path: Path
    config: dict
    metrics: pd.DataFrame
    complete: bool

    @property
    def task(self) -> str:
        return self.config["task"]["name"]

    @property
    def preset(self) -> str:
        return self.config["task"]["preset"]


def load_runs(results: Path, tasks: tuple[str, ...] | None = None, preset: str | None = None) -> list[Run]:
    """Every readable run under ``results`` (``results/<task>/<run>/``), oldest first. Runs without any
    metrics row yet are left out; runs still going (no summary.json) are kept with ``complete=False``."""
    runs = []
    for cfg_path in sorted(results.glob("*/*/config.json"), key=lambda p: p.stat().st_mtime):
        try:
            config = json.loads(cfg_path.read_text())
            metrics = pd.read_csv(cfg_path.parent / "metrics.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        run = Run(cfg_path.parent, config, metrics, (cfg_path.parent / "summary.json").exists())
        if metrics.empty or (tasks and run.task not in tasks) or (preset and run.preset != preset):
            continue
        runs.append(run)
    return runs


def require(runs: list, what: str, results: Path, hint: str) -> None:
    if not runs:
        raise UsageError(f"no {what} under {results}: {hint}")
