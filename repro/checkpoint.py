"""Checkpoint files: RUN_DIR/checkpoints/epochNNNNN.pt at an epoch end (N epochs done), epochNNNNN-stepSSSSSSSSS.pt
between two steps of the next epoch (after global step S), written atomically, the newest K kept.

A checkpoint holds every rank's state (model, optimizer, sync policy, schedule position, iterate averager, RNG
states, data position, counters: the trainer's ``state_dict()``) plus the run identity, so a checkpoint of another
run is refused. Where every rank can write into the run folder (one node, or nodes sharing a file system) each rank
writes its own state beside it (``epochNNNNN.rankRRRRR.pt``, in parallel, nothing crossing the network) and rank 0
writes the ``.pt`` file that names them last, so the checkpoint exists only once all of it does; otherwise the
states are gathered to global rank 0 and stored inside that one file. Only tensors, numbers, strings, lists and
dicts are stored, so loading uses ``torch.load(weights_only=True)``: no code runs while a checkpoint is read.
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


def _name(epoch: int, step: int | None) -> str:
    return f"epoch{epoch:05d}.pt" if step is None else f"epoch{epoch:05d}-step{step:09d}.pt"


def shard_name(epoch: int, step: int | None, rank: int) -> str:
    """The file beside checkpoint ``_name(epoch, step)`` that holds ``rank``'s state."""
    return f"{_name(epoch, step)[:-3]}.rank{rank:05d}.pt"


SHARD = re.compile(r"^(epoch\d{5,}(?:-step\d{9,})?)\.rank(\d{5,})\.pt$")


def _write_atomically(path: Path, payload: dict) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous checkpoint is kept") from None


def save_shard(checkpoint_dir: Path, epoch: int, identity: str, rank: int, state: dict,
               step: int | None = None) -> str:
    """Write one rank's state beside the checkpoint ``save`` will write (same epoch and step) and return the file's
    name, to be listed in that checkpoint. Until then the file is not part of any checkpoint."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    name = shard_name(epoch, step, rank)
    _write_atomically(checkpoint_dir / name, {"format": FORMAT, "version": VERSION, "identity": identity,
                                               "epoch": epoch, "step": step, "rank": rank, "state": state})
    return name


def save(run_dir: Path, epoch: int, identity: str, ranks: list[dict | str], keep: int = 1, extra: dict | None = None,
         step: int | None = None) -> Path:
    """Write the checkpoint after ``epoch`` epochs (and ``step`` steps in all, mid-epoch) atomically (temporary
    file, fsync, rename), then keep only the newest ``keep``. ``ranks`` holds each rank's state, or the name of the
    file ``save_shard`` wrote it to (already on disk). A failure (a full disk) leaves the previous checkpoints as
    they were and raises CheckpointError."""
    target_dir = folder(run_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / _name(epoch, step)
    payload = {"format": FORMAT, "version": VERSION, "identity": identity, "epoch": epoch, "world_size": len(ranks),
               "step": step, "time": time.time(), "ranks": ranks, **(extra or {})}
    _write_atomically(path, payload)
    kept = existing(run_dir)
    for old in kept[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    _remove_unlisted_shards(target_dir, kept[-keep:] if keep > 0 else kept)
    return path


def _remove_unlisted_shards(checkpoint_dir: Path, kept: list[Path]) -> None:
    """Shards of removed checkpoints, and those a failed save left behind, older than the newest checkpoint (a
    newer one may belong to the checkpoint being written now)."""
    if not kept:
        return
    keep_stems, newest_order = {p.name[:-3] for p in kept}, _order(kept[-1])
    for shard in checkpoint_dir.glob("epoch*.rank*.pt"):
        match = SHARD.match(shard.name)
        if match and match.group(1) not in keep_stems and _order(Path(match.group(1) + ".pt")) < newest_order:
            shard.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path, identity: str | None = None, world_size: int | None = None, check_ranks: bool = False) -> dict:
    """Read a checkpoint (weights only); a truncated, corrupt or foreign one raises CheckpointError. Rank files are
    read by ``rank_state``; ``check_ranks`` checks them all now (memory-mapped: their tensors are not read)."""
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
    missing = [name for name in payload.get("ranks", []) if isinstance(name, str) and not (path.parent / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: {len(missing)} rank file(s) missing, e.g. {missing[0]}")
    if check_ranks:
        for rank in range(len(payload.get("ranks", []))):
            rank_state(path, payload, rank)
    return payload


def rank_state(path: Path, payload: dict, rank: int) -> dict:
    """Rank ``rank``'s trainer state in the checkpoint ``load(path)`` returned: stored in it, or read from the
    rank's own file beside it (which must belong to the same run, epoch and step). The rank file is memory-mapped:
    its tensors are read when used (copied into the model and optimizer), not all at once."""
    entry = payload["ranks"][rank]
    if not isinstance(entry, str):
        return entry
    shard_path = Path(path).parent / entry
    try:
        shard = torch.load(shard_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise CheckpointError(f"checkpoint file {shard_path} is unreadable ({type(e).__name__}): truncated or not a "
                              "repro checkpoint") from None
    expected = {"format": FORMAT, "identity": payload.get("identity"), "epoch": payload.get("epoch"),
                "step": payload.get("step"), "rank": rank}
    if not isinstance(shard, dict) or any(shard.get(k) != v for k, v in expected.items()):
        raise CheckpointError(f"checkpoint file {shard_path} does not belong to {Path(path).name} (rank {rank})")
    return shard["state"]


def total_size(path: Path) -> int:
    """Bytes of a checkpoint with its rank files."""
    path = Path(path)
    return sum(p.stat().st_size for p in [path, *path.parent.glob(f"{path.name[:-3]}.rank*.pt")])


def size_text(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
