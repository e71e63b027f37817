"""Sync policies in real gloo process groups (2-3 worker processes)."""
import json
import math

import torch.multiprocessing as mp

import dist_helpers


def _spawn(fn, world, tmp_path, *args):
    mp.spawn(fn, args=(world, str(tmp_path / "store"), str(tmp_path), *args), nprocs=world, join=True)
    return [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]


def test_periodic_averages_params_and_buffers_every_interval(tmp_path):
    interval, steps, world = 3, 7, 3
    results = _spawn(dist_helpers.periodic_worker, world, tmp_path, interval, steps)
    for r in results:
        synced = [s == 0.0 for s in r["spreads"]]
        # identical right after steps 3 and 6 only; workers drift apart in between
        assert synced == [(t + 1) % interval == 0 for t in range(steps)]
        assert r["final"] == 0.0  # synchronize() before evaluation averages the leftover local step
        assert r["rounds"] == math.ceil(steps / interval)
        assert r["bytes"] == r["rounds"] * r["numel"] * 4  # float32 parameters + BatchNorm statistics


def test_every_step_all_reduces_gradients_so_workers_stay_identical(tmp_path):
    steps, world = 4, 2
    results = _spawn(dist_helpers.every_step_worker, world, tmp_path, steps)
    for r in results:
        assert all(r["grads_equal"])
        assert r["rounds"] == steps
        assert r["bytes"] == steps * r["n_params"] * 4
    assert results[0]["params"] == results[1]["params"]
