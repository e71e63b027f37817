"""The FED and QADAM experiments (repro/experiments/fedasync.py, qadam.py): the judged values read the right rows,
step sizes are chosen on the selection seed alone, and every rule gives each verdict on hand-made runs (both ways)."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from repro import claims
from repro.claims import Evidence
from repro.experiments import EXPERIMENTS
from repro.experiments import fedasync as fed
from repro.experiments import qadam

BIAS = EXPERIMENTS.get("fed-bias-logreg")
BIAS_SPEC = BIAS.scales["quick"]
FIX = EXPERIMENTS.get("fed-fedfix-cnn")
FIX_SPEC = FIX.scales["quick"]
QEF = EXPERIMENTS.get("qadam-ef-fashion-mnist")
QW = EXPERIMENTS.get("qadam-weights-fashion-mnist")


def _fed_run(seed: int, losses, horizon: float = 10.0):
    """A federated run with one row per emulated unit 0..horizon and federated loss ``losses`` (a number: flat)."""
    times = np.arange(0.0, horizon + 1.0)
    values = np.full(len(times), float(losses)) if np.isscalar(losses) else np.asarray(losses, dtype=float)
    return SimpleNamespace(seed=seed, config={"strategy": {"horizon": horizon}},
                           metrics=pd.DataFrame({"emulated_time": times, "train_loss": values}), complete=True)


def _judge(experiment, ev):
    (claim,) = experiment.claims
    return claim.judge(ev)


def test_the_largest_bias_is_the_divergence_of_the_uniform_weights_from_the_return_frequencies():
    tau = 1.0 - np.arange(10) * 0.8 / 9
    q = (1 / tau) / np.sum(1 / tau)
    assert fed.bias_bound() == pytest.approx(np.mean(np.log(0.1 / q)))
    assert fed.bias_bound() == pytest.approx(0.1339, abs=1e-3)
    assert fed.bias_bound(spread=0.0) == pytest.approx(0.0)
    assert fed.MARGIN < fed.bias_bound() / 4  # the margin cannot swallow the effect it is to tell apart


def test_late_loss_is_the_mean_of_the_last_fifth_and_a_diverged_run_a_failure():
    losses = [5.0] * 8 + [1.0, 2.0, 3.0]  # rows at t = 0..10: the last fifth is t >= 8
    assert fed.late_loss(_fed_run(0, losses)) == pytest.approx(2.0)
    assert fed.late_loss(_fed_run(0, [1.0] * 10 + [math.nan])) == math.inf
    assert fed.late_fluctuation(_fed_run(0, losses)) == pytest.approx(1.0)
    assert fed.time_to(_fed_run(0, [4.0, 3.0, 2.0] + [1.0] * 8), 2.5) == pytest.approx(1.5)
    assert fed.time_to(_fed_run(0, 3.0), 2.5) == math.inf


def test_the_server_steps_give_every_scheme_the_same_movement_per_unit_of_emulated_time():
    from repro import federated

    tau, horizon = federated.client_times(fed.M, fed.SPREAD), 90.0
    for strategy, weighting, opts in (("fedavg", "identical", {}), ("fedasync", "identical", {}),
                                      ("fedasync", "reweighted", {}), ("fedfix", "reweighted", {"dt": fed.DT})):
        _, versions = federated.schedule(strategy, tau, horizon, **opts)
        d = federated.weights(strategy, weighting, tau, **opts)
        moved = fed.server_step(strategy) * float(np.sum((versions >= 0) * d))  # Σ over aggregations of η_g Σ d_i
        assert moved / horizon == pytest.approx(fed.server_step("fedavg"), rel=0.03), (strategy, weighting)
    assert all("--lr" in s.argv and f"lr_global={fed.server_step(fed.SCHEMES[s.label][0]):.6g}" in s.argv
               for s in BIAS_SPEC.settings)


def _bias_evidence(judged: dict[str, float], seeds: int | None = None) -> Evidence:
    """Each scheme at ``judged[label]`` (+/- a little) on the planned seeds; a pilot run that would decide otherwise
    is never judged."""
    runs = {s.label: [] for s in BIAS_SPEC.settings}
    for label, value in judged.items():
        runs[label] = [_fed_run(seed, value + 0.002 * (k % 3 - 1)) for k, seed in enumerate(range(seeds or
                                                                                                   BIAS_SPEC.seeds))]
    runs["FedAvg non-iid"].append(_fed_run(fed.PILOT_SEEDS[0], 5.0))
    return Evidence(runs)


FAIR = {"FedAvg non-iid": 0.50, "FedAsync identical non-iid": 0.58, "FedAsync reweighted non-iid": 0.505,
        "FedFix reweighted non-iid": 0.49, "FedAvg iid": 0.45, "FedAsync identical iid": 0.451}


def test_fed_bias_gives_each_verdict():
    assert _judge(BIAS, _bias_evidence(FAIR)).outcome == claims.REPRODUCED
    biased_too = {**FAIR, "FedAsync reweighted non-iid": 0.58}
    assert _judge(BIAS, _bias_evidence(biased_too)).outcome == claims.NOT_REPRODUCED
    no_gap = {**FAIR, "FedAsync identical non-iid": 0.50}
    assert _judge(BIAS, _bias_evidence(no_gap)).outcome != claims.REPRODUCED
    iid_gap = {**FAIR, "FedAsync identical iid": 0.55}
    assert _judge(BIAS, _bias_evidence(iid_gap)).outcome == claims.NOT_REPRODUCED
    short = _judge(BIAS, _bias_evidence(FAIR, seeds=BIAS_SPEC.seeds - 1))
    assert short.outcome == claims.INCONCLUSIVE and "planned judging seeds" in short.detail
    extra = _bias_evidence(FAIR)  # runs on seeds after the plan's (e.g. `--seeds 6`) that would refute: not counted
    extra.runs["FedAsync reweighted non-iid"] += [_fed_run(seed, 0.58) for seed in range(BIAS_SPEC.seeds, 12)]
    assert _judge(BIAS, extra).outcome == claims.REPRODUCED


def _fix_evidence(curves: dict[str, list]) -> Evidence:
    runs = {s.label: [] for s in FIX_SPEC.settings}
    for grid, labels in FIX_SPEC.grids().items():
        for label in labels:
            runs[label].append(_fed_run(0, 0.5 if label == labels[1] else 0.9))
        runs[labels[1]] += [_fed_run(seed, curve) for seed, curve in zip(FIX_SPEC.judging_seeds(), curves[grid])]
    return Evidence(runs)


def test_fed_fedfix_needs_fedfix_sooner_and_calmer():
    down = lambda end, shift=0.0: list(np.linspace(2.0, end, 11) + shift)  # noqa: E731
    wobble = lambda k: [1.0] * 8 + [0.9 + 0.1 * k, 1.2, 0.8]  # noqa: E731
    good = {"FedAvg": [down(1.0, d) for d in (0.0, 0.01, -0.01)],
            "FedFix reweighted": [[2.0, 1.5] + [0.95 + d] * 9 for d in (0.0, 0.01, 0.02)],
            "FedAsync identical": [wobble(k) for k in range(3)]}
    assert _judge(FIX, _fix_evidence(good)).outcome == claims.REPRODUCED
    never = {**good, "FedFix reweighted": [down(1.5)] * 3}
    verdict = _judge(FIX, _fix_evidence(never))
    assert verdict.outcome == claims.NOT_REPRODUCED and "never reached" in verdict.detail
    extra = _fix_evidence(good)  # a run on a seed after the plan's that would refute: not counted
    chosen = FIX_SPEC.grids()["FedFix reweighted"][1]
    extra.runs[chosen].append(_fed_run(max(FIX_SPEC.judging_seeds()) + 1, down(1.5)))
    assert _judge(FIX, extra).outcome == claims.REPRODUCED


def _acc_run(seed: int, acc: float, up: int = 100, down: int = 400):
    metrics = pd.DataFrame({"epoch": [1.0, 2.0], "test_acc": [0.5, acc], "bytes_up_per_step": [up, up],
                            "bytes_down_per_step": [down, down], "status": ["", "done"]})
    return SimpleNamespace(seed=seed, metrics=metrics, complete=True)


def _acc_evidence(spec, means: dict[str, float], seeds: int | None = None) -> Evidence:
    runs = {s.label: [] for s in spec.settings}
    for label, mean in means.items():
        runs[label] = [_acc_run(seed, mean + 0.001 * (k % 3 - 1)) for k, seed in
                       enumerate(spec.judging_seeds(seeds))]
    runs[qadam.EF].append(_acc_run(qadam.PILOT_SEEDS[0], 0.10))  # a pilot run: never judged
    return Evidence(runs)


def test_qadam_ef_needs_error_feedback_within_the_tolerance_and_its_absence_below_it():
    spec = QEF.scales["quick"]
    good = _judge(QEF, _acc_evidence(spec, {qadam.FULL: 0.88, qadam.EF: 0.878, qadam.NO_EF: 0.83}))
    assert good.outcome == claims.REPRODUCED
    assert "100 B up / worker, 400 B down" in good.measured
    no_need = _judge(QEF, _acc_evidence(spec, {qadam.FULL: 0.88, qadam.EF: 0.878, qadam.NO_EF: 0.879}))
    assert no_need.outcome == claims.NOT_REPRODUCED
    short = _judge(QEF, _acc_evidence(spec, {qadam.FULL: 0.88, qadam.EF: 0.878, qadam.NO_EF: 0.83}, seeds=2))
    assert short.outcome == claims.INCONCLUSIVE


def test_qadam_ef_second_plan_sizes_each_arm_from_the_first_plans_runs_and_judges_fresh_seeds_only():
    spec = QEF.scales["quick"]
    assert spec.judging_seeds() == [3, 4, 5, 6] and not set(spec.judging_seeds()) & set(qadam.EF_PILOT_SEEDS)
    # full precision is in both parts, so it runs the larger need
    assert qadam.EF_ARM_SEEDS[qadam.FULL] == max(qadam.EF_ARM_SEEDS.values()) == spec.seeds
    assert len(QEF.cells("quick")) == sum(qadam.EF_ARM_SEEDS.values()) == 11
    means = {qadam.FULL: 0.88, qadam.EF: 0.878, qadam.NO_EF: 0.83}

    def runs(seeds_of) -> Evidence:
        return Evidence({label: [_acc_run(seed, mean + 0.001 * (seed % 3 - 1)) for seed in seeds_of(label)]
                         for label, mean in means.items()})
    planned = lambda label: range(3, 3 + qadam.EF_ARM_SEEDS[label])  # noqa: E731
    assert _judge(QEF, runs(planned)).outcome == claims.REPRODUCED
    # the pilot's seeds 0-2 never count, even with the plan's seeds one short
    one_short = lambda label: [*range(3), *list(planned(label))[:-1]]  # noqa: E731
    verdict = _judge(QEF, runs(one_short))
    assert verdict.outcome == claims.INCONCLUSIVE and "of 4" in verdict.detail


def _weights_evidence(means: dict, seeds) -> Evidence:
    return Evidence({label: [_acc_run(seed, mean + 0.001 * (seed % 3 - 1)) for seed in seeds]
                     for label, mean in means.items()})


SMOOTH = {qadam.EF: 0.88, **{qadam.delta_label(d): 0.88 - 0.02 * k for k, d in enumerate(qadam.DELTAS)}}


def test_qadam_weights_fails_on_a_cliff():
    planned = {label: 4 for label in qadam.WEIGHT_LADDER}
    judge = qadam.judge_weights(QW.scales["quick"], planned, seeds=range(10, 14))
    assert judge(_weights_evidence(SMOOTH, range(10, 14))).outcome == claims.REPRODUCED
    cliff = {**SMOOTH, qadam.delta_label(qadam.DELTAS[-1]): 0.30}
    verdict = judge(_weights_evidence(cliff, range(10, 14)))
    assert verdict.outcome == claims.NOT_REPRODUCED and f"δ={qadam.DELTAS[-1]:g} vs δ={qadam.DELTAS[-2]:g}" in \
        verdict.detail
    # the pilot's seeds and a missing planned seed: no verdict
    assert judge(_weights_evidence(SMOOTH, [900, 901, 902, 10, 11, 12])).outcome == claims.INCONCLUSIVE


def test_qadam_weights_second_plan_runs_its_pilot_first_then_sizes_each_arm_from_it():
    spec = QW.scales["quick"]
    if qadam.WEIGHTS_PILOT:  # the plan: fresh seeds from WEIGHTS_FIRST_SEED, each arm its own count
        assert spec.judging_seeds()[0] == qadam.WEIGHTS_FIRST_SEED
        assert len(QW.cells("quick")) == sum(qadam.WEIGHTS_ARM_SEEDS.values())
    else:  # until the pilot's values are in code, the scale's runs are the pilot and nothing is judged
        assert spec.judging_seeds() == list(qadam.PILOT_SEEDS)
        verdict = _judge(QW, _weights_evidence(SMOOTH, qadam.PILOT_SEEDS))
        assert verdict.outcome == claims.INCONCLUSIVE and "waiting for the pilot" in verdict.detail
    # sizing: a part whose pilot difference is far from its margin needs the minimum; one on its margin the cap;
    # an arm runs the largest need of its parts
    pilot = {label: (0.800, 0.802, 0.804) for label in qadam.WEIGHT_LADDER}
    assert set(qadam.weights_arm_seeds(pilot).values()) == {claims.MIN_SEEDS}
    pilot[qadam.delta_label(qadam.DELTAS[0])] = (0.790, 0.792, 0.794)  # exactly 1 point below float32: on the margin
    need = qadam.weights_part_seeds(pilot)
    assert need[qadam.WEIGHT_PARTS[0][0]] == qadam.WEIGHTS_AFFORDABLE
    arms = qadam.weights_arm_seeds(pilot)
    assert arms[qadam.EF] == arms[qadam.delta_label(qadam.DELTAS[0])] == qadam.WEIGHTS_AFFORDABLE
    assert arms[qadam.delta_label(qadam.DELTAS[-1])] == claims.MIN_SEEDS
