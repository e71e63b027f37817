"""The federated maths on their own: client times, the event clock's schedules (hand-worked cases, exact ties,
state_dict round trips) and the aggregation weights, against Fraboni et al.'s definitions."""
import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from repro import federated
from repro.errors import UsageError


def test_client_times_are_the_papers_f_x_scenario():
    tau = federated.client_times(10, 0.8)
    assert tau[0] == 1.0 and tau[-1] == pytest.approx(0.2)
    assert np.allclose(tau, [1 - i * 0.8 / 9 for i in range(10)])
    assert np.all(np.diff(tau) < 0)
    assert federated.client_times(1, 0.5).tolist() == [1.0]
    assert federated.client_times(3, 0.0).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("spread", [-0.1, 1.0, 1.5])
def test_client_times_refuse_a_spread_outside_0_1(spread):
    with pytest.raises(UsageError, match="spread"):
        federated.client_times(5, spread)


TAU = [1, Fraction(5, 6), Fraction(2, 3), Fraction(1, 2)]  # client_times(4, 0.5), worked by hand below


def test_fedavg_waits_for_the_slowest_client():
    times, versions = federated.schedule("fedavg", TAU, 3)
    assert times.tolist() == [1.0, 2.0, 3.0]
    assert versions.tolist() == [[0] * 4, [1] * 4, [2] * 4]


def test_fedasync_hand_worked():
    times, versions = federated.schedule("fedasync", TAU, 2)
    # client returns: 3 @ 1/2, 2 @ 2/3, 1 @ 5/6, then 0 and 3 both @ 1 (tie: 0 first), 2 @ 4/3, 3 @ 3/2, 1 @ 5/3,
    # then 0, 2 and 3 all @ 2 in index order.
    expected = [(1 / 2, 3, 0), (2 / 3, 2, 0), (5 / 6, 1, 0), (1, 0, 0), (1, 3, 1), (4 / 3, 2, 2), (3 / 2, 3, 5),
                (5 / 3, 1, 3), (2, 0, 4), (2, 2, 6), (2, 3, 7)]
    assert times.tolist() == pytest.approx([t for t, _, _ in expected])
    for row, (_, client, version) in zip(versions, expected):
        assert np.flatnonzero(row >= 0).tolist() == [client] and row[client] == version


def test_fedbuff_hand_worked():
    times, versions = federated.schedule("fedbuff", TAU, 2, c=2)
    assert times.tolist() == pytest.approx([2 / 3, 1, 4 / 3, 11 / 6, 2])
    assert versions.tolist() == [[-1, -1, 0, 0], [0, 0, -1, -1], [-1, -1, 1, 1], [-1, 2, -1, 3], [2, -1, 3, -1]]


def test_fedbuff_ties_go_to_the_lowest_index():
    times, versions = federated.schedule("fedbuff", [1, 1, 1], 2, c=2)
    assert times.tolist() == [1.0, 2.0]
    assert versions.tolist() == [[0, 0, -1], [1, -1, 0]]  # client 2 waited; at t=2 it ties with 0 and 1


def test_fedfix_hand_worked():
    times, versions = federated.schedule("fedfix", TAU, 2, dt=0.5)
    assert times.tolist() == [0.5, 1.0, 1.5, 2.0]
    # at 1/2 only client 3 finished (exactly at the boundary); at 1 everyone; clients restart at the aggregation
    assert versions.tolist() == [[-1, -1, -1, 0], [0, 0, 0, 1], [-1, -1, -1, 2], [2, 2, 2, 3]]


def test_empty_fedfix_aggregations_still_count():
    times, versions = federated.schedule("fedfix", [1.0], 2.4, dt=0.4)
    assert times.tolist() == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0, 2.4])
    assert versions[:, 0].tolist() == [-1, -1, 0, -1, -1, 3]  # returns @1 (taken at 1.2), restarts, returns @2.2


def test_the_clock_is_exact():
    # In floats 0.1 + 0.1 + 0.1 > 0.3, so client 1 would come first; the clock ties them and takes client 0.
    times, versions = federated.schedule("fedasync", [0.1, 0.3], 0.3)
    assert [int(np.flatnonzero(r >= 0)[0]) for r in versions] == [0, 0, 0, 1]
    times, versions = federated.schedule("fedfix", federated.client_times(10, 0.8), 3, dt=0.2)
    # F-80 with M = 10: τ_9 = 1/5 exactly, so client 9 returns exactly at every boundary and is in every aggregation
    assert (versions[:, 9] >= 0).all()


@pytest.mark.parametrize("scheme,opts", [("fedavg", {}), ("fedasync", {}), ("fedbuff", {"c": 3}),
                                         ("fedfix", {"dt": 0.3})])
def test_the_clock_resumes_from_its_state_dict(scheme, opts):
    tau = federated.client_times(7, 0.8)
    whole = list(federated.make(scheme, **opts).bind(tau).events(12))
    first = federated.make(scheme, **opts).bind(tau)
    head = list(first.events(5))
    state = json.loads(json.dumps(first.state_dict()))  # it travels as plain data (checkpoints, config)
    second = federated.make(scheme, **opts).bind(tau)
    second.load_state_dict(state)
    tail = list(second.events(12))
    assert head + tail == whole and len(head) > 0 and len(tail) > 0


def test_a_state_dict_from_other_clients_is_refused():
    state = federated.make("fedasync").bind([1, 0.5]).state_dict()
    with pytest.raises(ValueError, match="does not fit"):
        federated.make("fedasync").bind([1, 0.4]).load_state_dict(state)


def test_schedules_are_deterministic_and_versions_are_consistent():
    tau = federated.client_times(20, 0.8)
    for scheme, opts in [("fedasync", {}), ("fedbuff", {"c": 5}), ("fedfix", {"dt": 0.25})]:
        times, versions = federated.schedule(scheme, tau, 10, **opts)
        again = federated.schedule(scheme, tau, 10, **opts)
        assert np.array_equal(times, again[0]) and np.array_equal(versions, again[1])
        assert np.all(np.diff(times) >= 0) and times[-1] <= 10
        for n, row in enumerate(versions):  # a client started from a version made before this aggregation
            assert np.all(row[row >= 0] <= n)


def test_weights_follow_the_authors():
    tau = federated.client_times(5, 0.8)
    p = np.full(5, 0.2)
    assert np.allclose(federated.weights("fedavg", "identical", tau, p), p)
    assert np.allclose(federated.weights("fedasync", "identical", tau, p), 1)
    reweighted = federated.weights("fedasync", "reweighted", tau, p)
    assert np.allclose(reweighted, np.sum(1 / tau) * tau * p)
    # each client's expected share of the updates (rate 1/τ_i times d_i) is p_i / Σ... : equal for equal p
    assert np.allclose(reweighted / tau, reweighted[0] / tau[0])
    assert np.allclose(federated.weights("fedfix", "reweighted", tau, p, dt=0.3), np.ceil(tau / 0.3) * p)
    assert np.allclose(federated.weights("fedbuff", "identical", tau, p, c=2), 0.5)
    times, versions = federated.schedule("fedbuff", tau, 50, c=2)
    rate = (versions >= 0).mean(axis=0)
    assert np.allclose(federated.weights("fedbuff", "reweighted", tau, p, c=2, horizon=50), p / rate)


def test_the_launch_check_accepts_every_weighting_of_every_scheme():
    """The check `repro run` makes before any worker starts binds the strategy as the driver does (FedBuff's
    reweighted d_i need the horizon)."""
    from repro.federated import loop

    for scheme, opts in [("fedasync", {}), ("fedbuff", {"c": 3}), ("fedfix", {"dt": 0.5})]:
        for weighting in ("identical", "reweighted"):
            loop.check({"name": scheme, "options": {**opts, "weighting": weighting}, "clients": 10, "spread": 0.8,
                        "horizon": 50.0, "eval_every": 5.0}, world=2)
    times, versions = federated.schedule("fedbuff", federated.client_times(10, 0.8), 50, c=3, weighting="reweighted")
    assert len(times) == len(versions) > 0


@pytest.mark.parametrize("scheme,opts,message", [("fedbuff", {"c": 6}, "larger than the 5 clients"),
                                                 ("fedbuff", {"c": 0}, "c"), ("fedfix", {"dt": 0}, "dt"),
                                                 ("fedfix", {"dt": -1.0}, "dt")])
def test_bad_settings_are_one_line_errors(scheme, opts, message):
    with pytest.raises(UsageError, match=message):
        federated.schedule(scheme, federated.client_times(5, 0.5), 3, **opts)


def test_aggregation_is_the_papers_update():
    strategy = federated.make("fedasync", weighting="reweighted", lr_global=0.5).bind([1.0, 0.5])
    server = [torch.zeros(3)]
    deltas = {0: [torch.ones(3)], 1: [torch.full((3,), 2.0)]}
    strategy.aggregate(server, strategy.weighted_sum(deltas))
    d = strategy.d
    assert torch.allclose(server[0], torch.full((3,), 0.5 * (d[0] * 1 + d[1] * 2), dtype=torch.float32))
