"""Checkpoint files: RUN_DIR/checkpoints/epochNNNNN.pt at an epoch end (N epochs done), epochNNNNN-stepSSSSSSSSS.pt
between two steps of the next epoch (after global step S), written atomically, the newest K kept.

A checkpoint holds every rank's state (model, optimizer, sync policy, schedule position, iterate averager, RNG
states, data position, counters: the trainer's ``state_dict()``), gathered to global rank 0, plus the run identity
so a checkpoint of another run is refused. Only tensors, numbers, strings, lists and dicts are stored, so loading
uses ``torch.load(weights_only=True)``: no code runs while a checkpoint is read.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import torch

from repro.errors import UsageError

FORMAT = "repro-checkpoint"
VERSION = 1
NAME = re.compile(r"epoch(\d{5,})(?:-step(\d{9,}))?\.pt$")


def _order(path: Path) -> tuple[int, int]:
    match = NAME.search(path.name)
    return int(match.group(1)), int(match.group(2) or -1)  # an epoch end comes before the steps of the next epoch


class CheckpointError(UsageError):
    """A checkpoint that cannot be written or read (one line for the user, exit 2)."""


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def existing(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    found = [p for p in folder(run_dir).glob("epoch*.pt") if NAME.search(p.name)]
    return sorted(found, key=_order)


def newest(run_dir: Path) -> Path | None:
    found = existing(run_dir)
    return found[-1] if found else None


def save(run_dir: Path, epoch: int, identity: str, ranks: list[dict], keep: int = 1, extra: dict | None = None,
         step: int | None = None) -> Path:
    """Write the checkpoint after ``epoch`` epochs (and ``step`` steps in all, mid-epoch) atomically (temporary file, fsync, rename), then keep only the newest
    ``keep``. A failure (a full disk) leaves the previous checkpoints as they were and raises CheckpointError."""
    target_dir = folder(run_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / (f"epoch{epoch:05d}.pt" if step is None else f"epoch{epoch:05d}-step{step:09d}.pt")
    tmp = target_dir / f".{path.name}.{os.getpid()}.tmp"
    payload = {"format": FORMAT, "version": VERSION, "identity": identity, "epoch": epoch, "world_size": len(ranks),
               "step": step, "time": time.time(), "ranks": ranks, **(extra or {})}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(target_dir)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous checkpoint is kept") from None
    for old in existing(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path, identity: str | None = None, world_size: int | None = None) -> dict:
    """Read a checkpoint (weights only); a truncated, corrupt or foreign one raises CheckpointError."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}): truncated or not a repro "
                              "checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a repro checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, this repro reads {VERSION}")
    if identity is not None and payload.get("identity") != identity:
        raise CheckpointError(f"{path} belongs to another run (identity {payload.get('identity')}, this run {identity})")
    if world_size is not None and payload.get("world_size") != world_size:
        raise CheckpointError(f"{path} was written by {payload.get('world_size')} workers, this run has {world_size}")
    return payload


def size_text(path: Path) -> str:
    size = path.stat().st_size
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
