"""Checkpoint files: atomic, the newest K kept, a full disk leaves the previous one, foreign or corrupt refused."""
import errno
import random

import pytest
import torch

from repro import checkpoint
from repro.checkpoint import CheckpointError


def _ranks():
    return [{"model": {"w": torch.arange(4.0) + r}, "rng": torch.get_rng_state(), "python_rng": random.getstate(),
             "counters": {"iteration": 10, "seen": 1.5}} for r in range(2)]


def test_save_load_round_trip_with_weights_only_and_keep(tmp_path):
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, epoch, "abc", _ranks(), keep=2)
    assert [p.name for p in checkpoint.existing(tmp_path)] == ["epoch00002.pt", "epoch00003.pt"]
    payload = checkpoint.load(checkpoint.newest(tmp_path), identity="abc", world_size=2)
    assert payload["epoch"] == 3 and torch.equal(payload["ranks"][1]["model"]["w"], torch.arange(4.0) + 1)
    assert tuple(payload["ranks"][0]["python_rng"][1]) == tuple(random.getstate()[1])


def test_mid_epoch_checkpoints_sort_after_their_epoch_end_and_count_toward_keep(tmp_path):
    checkpoint.save(tmp_path, 2, "abc", _ranks(), keep=3)
    checkpoint.save(tmp_path, 1, "abc", _ranks(), keep=3, step=7)  # 7 steps in all, during epoch 2
    checkpoint.save(tmp_path, 2, "abc", _ranks(), keep=3, step=123456)
    checkpoint.save(tmp_path, 2, "abc", _ranks(), keep=3, step=99)
    assert [p.name for p in checkpoint.existing(tmp_path)] == [
        "epoch00002.pt", "epoch00002-step000000099.pt", "epoch00002-step000123456.pt"]
    assert checkpoint.load(checkpoint.newest(tmp_path))["step"] == 123456


def test_a_full_disk_while_writing_a_metrics_row_is_one_clear_error(tmp_path):
    from repro.launch import _failure_message
    from repro.runlog import MetricsCSV

    with pytest.raises(OSError, match=r"cannot write /dev/full: No space left on device; the rows before"):
        MetricsCSV("/dev/full", ["epoch", "train_loss"])  # a real device that is always full
    log = tmp_path / "rank0.log"
    try:
        MetricsCSV("/dev/full", ["epoch"])
    except OSError:
        import traceback

        log.write_text(traceback.format_exc())
    message = _failure_message(0, 1, log)
    assert "\n" not in message and message.startswith("worker rank 0 failed (exit code 1): OSError: [Errno 28] "
                                                       "cannot write /dev/full")


def test_foreign_truncated_and_non_checkpoints_are_one_line_errors(tmp_path):
    path = checkpoint.save(tmp_path, 1, "abc", _ranks())
    with pytest.raises(CheckpointError, match="belongs to another run"):
        checkpoint.load(path, identity="xyz")
    with pytest.raises(CheckpointError, match="written by 2 workers"):
        checkpoint.load(path, identity="abc", world_size=4)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoint.load(tmp_path / "cut.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a repro checkpoint"):
        checkpoint.load(tmp_path / "other.pt")


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first = checkpoint.save(tmp_path, 1, "abc", _ranks())
    before = first.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full_disk)  # the write fails where a full disk would show
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint is kept"):
        checkpoint.save(tmp_path, 2, "abc", _ranks())
    monkeypatch.undo()
    assert checkpoint.existing(tmp_path) == [first] and first.read_bytes() == before
    assert not list(checkpoint.folder(tmp_path).glob(".*tmp"))  # no half-written file left


def _save_sharded(run_dir, epoch, identity="abc", step=None, keep=2):
    """What the workers do: each rank writes its own file, then rank 0 the checkpoint that names them."""
    names = [checkpoint.save_shard(checkpoint.folder(run_dir), epoch, identity, rank, state, step=step)
             for rank, state in enumerate(_ranks())]
    return checkpoint.save(run_dir, epoch, identity, names, keep=keep, step=step)


def test_rank_files_round_trip_and_leave_with_their_checkpoint(tmp_path):
    for epoch in (1, 2, 3):
        path = _save_sharded(tmp_path, epoch)
    payload = checkpoint.load(path, identity="abc", world_size=2)
    assert payload["ranks"] == ["epoch00003.rank00000.pt", "epoch00003.rank00001.pt"]  # the file holds names only
    assert torch.equal(checkpoint.rank_state(path, payload, 1)["model"]["w"], torch.arange(4.0) + 1)
    # keep=2: epoch 1's checkpoint and its rank files are gone; rank files of a save that never finished, older
    # than the newest checkpoint, go too, but a newer one (a save under way) stays
    checkpoint.save_shard(checkpoint.folder(tmp_path), 0, "abc", 1, _ranks()[1], step=5)
    checkpoint.save_shard(checkpoint.folder(tmp_path), 4, "abc", 1, _ranks()[1])
    _save_sharded(tmp_path, 3, step=40)
    left = sorted(p.name for p in checkpoint.folder(tmp_path).iterdir())
    assert left == ["epoch00003-step000000040.pt", "epoch00003-step000000040.rank00000.pt",
                    "epoch00003-step000000040.rank00001.pt", "epoch00003.pt", "epoch00003.rank00000.pt",
                    "epoch00003.rank00001.pt", "epoch00004.rank00001.pt"]


def test_a_missing_or_foreign_rank_file_is_a_one_line_error(tmp_path):
    path = _save_sharded(tmp_path, 1)
    (path.parent / "epoch00001.rank00001.pt").unlink()
    with pytest.raises(CheckpointError, match="incomplete: 1 rank file"):
        checkpoint.load(path)
    # a file of the same name from another run (or another step) is refused, not loaded
    checkpoint.save_shard(path.parent, 1, "xyz", 1, _ranks()[1])
    payload = checkpoint.load(path)
    with pytest.raises(CheckpointError, match="does not belong to epoch00001.pt"):
        checkpoint.rank_state(path, payload, 1)
    assert checkpoint.rank_state(path, payload, 0)["counters"]["iteration"] == 10
