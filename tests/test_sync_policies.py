"""Sync policies in real gloo process groups (2-3 worker processes)."""
import pytest
import json
import math

import torch

import dist_helpers


def _spawn(fn, world, tmp_path, *args):
    dist_helpers.spawn(fn, world, str(tmp_path / "store"), str(tmp_path), *args)
    return [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]


@pytest.mark.slow
@pytest.mark.dist
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
        assert r["in_place"]  # averaged into the model's own tensors (their memory format, e.g. channels_last, kept)


@pytest.mark.slow
@pytest.mark.dist
def test_every_step_all_reduces_gradients_so_workers_stay_identical(tmp_path):
    steps, world = 4, 2
    results = _spawn(dist_helpers.every_step_worker, world, tmp_path, steps)
    for r in results:
        assert all(r["grads_equal"])
        assert r["rounds"] == steps
        assert r["bytes"] == steps * r["n_params"] * 4
    assert results[0]["params"] == results[1]["params"]


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("optimizer,hparams,epochs", [("clipped-sgd", {"lr": 0.5, "clip": 0.1}, 4),
                                                      ("sgdol", {}, 8)])  # 20 steps either way (5 batches an epoch)
def test_every_step_bucketed_by_ddp_equals_the_flat_all_reduce(tmp_path, optimizer, hparams, epochs):
    """DDP's reducer + comm hook (bucketed=true) against one flat all-reduce: the same model after 20 steps on a
    model with BatchNorm (statistics stay local) and dropout, the same communication counters."""
    import trainer_helpers

    spec = {"task": {"name": "toy", "preset": "test", "options": {}},
            "optimizer": {"name": optimizer, "hparams": hparams},
            "schedule": {"name": "step", "options": {"milestones": [3], "gamma": 0.5}},
            "train": {"epochs": epochs, "seed": 3, "machines": 2}}
    results = _spawn(trainer_helpers.flat_and_bucketed, 2, tmp_path, spec)
    for r in results:
        flat, bucketed = r["False"], r["True"]
        assert (flat["wrapped"], bucketed["wrapped"]) == ("Sequential", "_ModelDDP")
        assert flat["state"].keys() == bucketed["state"].keys()
        for name, value in flat["state"].items():
            assert torch.allclose(torch.tensor(bucketed["state"][name]), torch.tensor(value), atol=1e-6), name
        last = bucketed["rows"][-1]
        assert last["iteration"] == 20
        assert last["comm_rounds"] == last["grad_evals"]  # one round per gradient: SGDOL's two per step
        assert last["comm_bytes"] == last["grad_evals"] * r["True"]["numel"] * 4
        counters = ("iteration", "grad_evals", "comm_rounds", "comm_bytes", "eval_comm_rounds", "eval_comm_bytes")
        assert [{k: row[k] for k in counters} for row in bucketed["rows"]] == \
               [{k: row[k] for k in counters} for row in flat["rows"]]
    # BatchNorm statistics are local (broadcast_buffers=False, as the flat version): the workers' differ
    assert results[0]["True"]["state"]["1.running_mean"] != results[1]["True"]["state"]["1.running_mean"]


@pytest.mark.slow
@pytest.mark.dist
def test_the_initial_broadcast_is_skipped_only_when_every_worker_holds_the_same_weights(tmp_path):
    results = _spawn(dist_helpers.broadcast_worker, 3, tmp_path)
    for r in results:
        assert r["made_same"] is False and r["spread_same"] == 0.0  # nothing sent: the digests agreed
        assert r["made_differ"] is True and r["spread_differ"] == 0.0  # one element differed on one worker
        assert r["first"] == results[0]["first"] == 1.0  # rank 0's value everywhere


@pytest.mark.slow
@pytest.mark.dist
def test_worker_spread_is_zero_for_identical_models_and_exact_otherwise(tmp_path):
    results = _spawn(dist_helpers.spread_worker, 3, tmp_path)
    assert [r["same"] for r in results] == [0.0] * 3
    assert [r["differ"] for r in results] == [1.0] * 3  # the buffer's 0.5 x 2 beats the weight's 0.25 x 2
