"""The gossip and robust sync policies in real gloo process groups (2-5 worker processes, tiny models)."""
import json
import math

import pytest

import decentralized_helpers as helpers
import dist_helpers

pytestmark = [pytest.mark.slow, pytest.mark.dist]


def _spawn(fn, world, tmp_path, *args):
    dist_helpers.spawn(fn, world, str(tmp_path / "store"), str(tmp_path), *args)
    return [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]


def test_with_lr_zero_gossip_is_w_times_x_keeps_the_average_and_books_degree_times_the_model(tmp_path):
    world, steps = 4, 3
    cases = [("ring", "lian"), ("ring", "atc"), ("one-peer-exponential", "lian"), ("torus", "atc"),
             ("exponential", "lian")]
    results = _spawn(helpers.gossip_mixes_with_w, world, tmp_path, cases, steps)
    for topology, order in cases:
        for r in (result[f"{topology}-{order}"] for result in results):
            assert max(r["errors"]) < 1e-6, (topology, order)  # float32 models, the expectation in float64
            assert max(r["mean_moves"]) < 1e-6
            consensus, expected = r["consensus"]
            assert consensus == pytest.approx(expected, rel=1e-6, abs=1e-9)
            model_bytes = r["numel"] * 4
            ledger = r["ledger"]
            assert ledger["comm_rounds"] == steps
            assert ledger["comm_bytes"] == steps * model_bytes
            assert ledger["bytes_sent"] == ledger["bytes_received"] == sum(r["degree"]) * model_bytes
    assert results[0]["ring-lian"]["degree"] == [2, 2, 2]
    assert results[0]["ring-lian"]["consensus"][0] > 0.01  # three ring steps do not reach consensus
    assert results[0]["one-peer-exponential-lian"]["degree"] == [1, 1, 1]


def test_gossip_on_the_complete_graph_with_atc_is_every_step_model_averaging(tmp_path):
    results = _spawn(helpers.complete_atc_against_averaging, 3, tmp_path, 6)
    for r in results:
        assert max(abs(a - b) for a, b in zip(r["gossip"], r["periodic"])) < 1e-5
    assert max(abs(a - b) for a, b in zip(results[0]["gossip"], results[2]["gossip"])) < 1e-6


@pytest.mark.parametrize("behaviour,options", [("alie", {"search": "auto"}), ("noise", {"sigma": 0.3}),
                                               ("foe", {}), ("sign-flip", {})])
def test_attack_vectors_are_bitwise_equal_on_every_rank_and_honest_models_stay_close(tmp_path, behaviour, options):
    world, count, steps = 5, 1, 4
    results = _spawn(helpers.robust_exchange, world, tmp_path, behaviour, options, count, "nna", 1, steps)
    assert all(len(r["forged"]) == steps for r in results)
    assert all(r["forged"] == results[0]["forged"] for r in results)  # the same floats, bit for bit
    assert all(r["mask"] == [True] * 4 + [False] for r in results)
    for r in results:
        size = r["numel"] * 4
        assert r["ledger"]["bytes_sent"] == r["ledger"]["bytes_received"] == steps * (world - 1) * size
    if behaviour == "noise":
        assert results[0]["forged"][0] != results[0]["forged"][1]  # a fresh draw every step


def test_a_crashed_rank_is_dropped_and_the_honest_ranks_agree_under_the_mean(tmp_path):
    results = _spawn(helpers.robust_exchange, 3, tmp_path, "crash", {"at_step": 1, "mode": "drop"}, 1, "mean", 0, 3)
    assert results[0]["forged"][0] != [] and results[0]["forged"][1:] == [[], []]  # row present at step 0 only
    assert results[0]["model"] == results[1]["model"]  # the two honest ranks hold their mean


def test_a_nan_sending_faulty_rank_does_not_mark_the_run_diverged(tmp_path):
    results = _spawn(helpers.trainer_with_faults, 4, tmp_path, "nan", 1, "nna", 1, 2)
    rows = results[0]["rows"]
    assert [row["status"] for row in rows] == ["", "done"]
    assert all(math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) for row in rows)
    assert all(math.isfinite(row["consensus_distance"]) for row in rows)
    assert [r["finite"] for r in results] == [True, True, True, False]  # the faulty rank's own model is NaN
    # plain averaging with the same faulty rank: the honest models are poisoned and the run diverges
    (tmp_path / "mean").mkdir()  # a fresh file store
    poisoned = _spawn(helpers.trainer_with_faults, 4, tmp_path / "mean", "nan", 1, "mean", 0, 1)
    assert poisoned[0]["rows"][-1]["status"] == "diverged"
