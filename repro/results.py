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

    @property
    def seed(self) -> int:
        return int(self.config["train"]["seed"])

    @property
    def setting(self) -> str:
        """The same for runs that differ only in their seed (group them for mean, std and n)."""
        from repro.config import RunConfig

        return RunConfig.from_dict(self.config).setting(int(self.config.get("world_size", self.config["train"]["machines"])))


def load_runs(results: Path, tasks: tuple[str, ...] | None = None, preset: str | None = None) -> list[Run]:
    """Every readable run under ``results`` (``results/<task>/<run>/``), oldest first. Runs without any
    metrics row yet are left out; runs still going (no summary.json) are kept with ``complete=False``."""
    runs = []
    for cfg_path in sorted(results.glob("*/*/config.json"), key=lambda p: p.stat().st_mtime):
        try:
            config = upgraded(json.loads(cfg_path.read_text()))
            metrics = pd.read_csv(cfg_path.parent / "metrics.csv")
        except (OSError, ValueError, KeyError, TypeError, UsageError, pd.errors.EmptyDataError):
            continue
        if "train_eval_loss" in metrics.columns:  # before v2 the MNIST tasks named their whole-training-set pass so
            metrics = metrics.rename(columns={"train_eval_loss": "trainset_loss", "train_acc": "trainset_acc"})
        run = Run(cfg_path.parent, config, metrics, (cfg_path.parent / "summary.json").exists())
        if metrics.empty or (tasks and run.task not in tasks) or (preset and run.preset != preset):
            continue
        runs.append(run)
    return runs


def upgraded(data: dict) -> dict:
    """A config.json of any version in today's shape, every default written out (readers never re-derive them);
    the keys outside the run config (identity, world_size, environment...) are kept."""
    from repro.config import RunConfig

    return {**data, **RunConfig.from_dict(data).to_dict()}


def by_setting(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by setting (runs differing only in their seed together), each group in seed order; a seed run
    twice counts once (its newest complete run, else its newest)."""
    groups: dict[str, dict[int, Run]] = {}
    for run in runs:  # oldest first: a later repeat of a seed replaces an earlier one unless only that one completed
        seeds = groups.setdefault(run.setting, {})
        if run.seed not in seeds or run.complete or not seeds[run.seed].complete:
            seeds[run.seed] = run
    return {key: [seeds[s] for s in sorted(seeds)] for key, seeds in groups.items()}


def require(runs: list, what: str, results: Path, hint: str) -> None:
    if not runs:
        raise UsageError(f"no {what} under {results}: {hint}")
