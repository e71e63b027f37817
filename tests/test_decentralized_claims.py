"""The rules of the decentralized and robust claims (repro/experiments/monna.py, dpsgd.py) on made-up numbers, and
the pieces their settings add: the hyperbolic schedule and the MoNNA authors' CNN."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from repro import claims, schedules
from repro.claims import Evidence
from repro.experiments import EXPERIMENTS
from repro.experiments import dpsgd, monna


def _run(seed: int, **columns) -> SimpleNamespace:
    """A complete run whose metrics hold ``columns`` (each a list of per-evaluation values)."""
    return SimpleNamespace(seed=seed, metrics=pd.DataFrame(columns))


def _accuracy_runs(label_means: dict[str, float], seeds: int = 3) -> Evidence:
    """Runs whose last three worker-0 and average test accuracies are the mean +- 0.002 by seed."""
    runs = {}
    for label, mean in label_means.items():
        runs[label] = [_run(s, worker0_test_acc=[0.5, mean + 0.002 * (s - 1)] + [mean + 0.002 * (s - 1)] * 2,
                            test_acc=[0.5] + [mean] * 3) for s in range(seeds)]
    return Evidence(runs)


def _robust_means(plain: float) -> dict[str, float]:
    means = {monna.FAULT_FREE: 0.97}
    for attack in monna.ATTACKS:
        means[monna.monna(attack)] = 0.965
        means[monna.averaging(attack)] = plain
    return means


def test_monna_robust_needs_monna_within_and_averaging_outside_the_tolerance():
    judge = monna.judge_robust(3)
    assert judge(_accuracy_runs(_robust_means(plain=0.60))).outcome == claims.REPRODUCED
    # plain averaging as good as fault-free under every attack: the claim's second half fails
    assert judge(_accuracy_runs(_robust_means(plain=0.97))).outcome == claims.NOT_REPRODUCED
    means = _robust_means(plain=0.60)
    means[monna.monna("FOE")] = 0.80  # MoNNA itself falls 17 points under FOE
    assert judge(_accuracy_runs(means)).outcome == claims.NOT_REPRODUCED
    # two seeds of three planned: no verdict, whatever the numbers
    verdict = judge(_accuracy_runs(_robust_means(plain=0.60), seeds=2))
    assert verdict.outcome == claims.INCONCLUSIVE and "planned" in verdict.detail
    # runs after the plan's seeds (`--seeds 60`) that would refute are not counted
    pinned = monna.judge_robust(3, seeds=range(3))
    extra = _accuracy_runs(_robust_means(plain=0.60))
    refuting = _accuracy_runs({monna.monna("FOE"): 0.50}, seeds=20).runs[monna.monna("FOE")][3:]
    extra.runs[monna.monna("FOE")] += refuting
    assert judge(extra).outcome == claims.NOT_REPRODUCED and pinned(extra).outcome == claims.REPRODUCED


def test_a_diverged_run_counts_as_zero_accuracy():
    run = _run(0, worker0_test_acc=[0.9, None], status=["", "diverged"])
    assert monna.WORKER0(run) == 0.0


def test_monna_momentum_needs_monna_above_nna_without_momentum():
    judge = monna.judge_momentum(3)
    better = {monna.monna(a): 0.96 for a in ("ALIE", "FOE")} | {monna.without_momentum(a): 0.90 for a in ("ALIE", "FOE")}
    assert judge(_accuracy_runs(better)).outcome == claims.REPRODUCED
    worse = {monna.monna(a): 0.90 for a in ("ALIE", "FOE")} | {monna.without_momentum(a): 0.96 for a in ("ALIE", "FOE")}
    assert judge(_accuracy_runs(worse)).outcome == claims.NOT_REPRODUCED


def test_seeds_for_an_effect_grow_with_the_spread_and_shrink_with_the_effect():
    # 80 % power: (t + z) sqrt((a^2 + b^2) / n) <= effect; equal stds 1 and effect 1: about 2 (1.96 + 0.84)^2 = 16
    assert claims.seeds_for_effect(1.0, 1.0, 1.0) == 17
    assert claims.seeds_for_effect(1.0, 1.0, 2.0) < 17 < claims.seeds_for_effect(2.0, 1.0, 1.0)
    assert claims.seeds_for_effect(0.0, 0.0, 0.1) == claims.MIN_SEEDS
    with pytest.raises(ValueError):
        claims.seeds_for_effect(1.0, 1.0, 0.0)


def test_monna_momentum_second_plan_is_sized_from_its_pilot_and_judges_fresh_seeds_only():
    experiment = EXPERIMENTS.get("monna-momentum-mnist")
    spec = experiment.scales["quick"]
    assert monna.MOMENTUM_SEEDS == max(monna._momentum_seeds(a) for a in ("ALIE", "FOE")) == 14
    assert spec.judging_seeds() == list(range(4, 18))
    assert not set(spec.judging_seeds()) & set(monna.MOMENTUM_PILOT_SEEDS)
    # the same arms (same commands) as monna-mnist's, whose runs of them are the pilot
    first = {s.label: s.argv for s in EXPERIMENTS.get("monna-mnist").scales["quick"].settings}
    assert all(first[s.label] == s.argv for s in spec.settings)
    assert [c.id for c in experiment.claims] == ["MoNNA-momentum"]
    assert "MoNNA-momentum" not in [c.id for c in EXPERIMENTS.get("monna-mnist").claims]
    judge = experiment.claims[0].judge

    def runs(means: dict[str, float], seeds) -> dict:
        return {label: [_run(s, worker0_test_acc=[0.5, mean + 0.002 * (s % 3)] + [mean + 0.002 * (s % 3)] * 2,
                             test_acc=[0.5] + [mean] * 3) for s in seeds] for label, mean in means.items()}

    better = {monna.monna(a): 0.96 for a in ("ALIE", "FOE")} | {monna.without_momentum(a): 0.90 for a in ("ALIE", "FOE")}
    worse = {monna.monna(a): 0.90 for a in ("ALIE", "FOE")} | {monna.without_momentum(a): 0.96 for a in ("ALIE", "FOE")}
    # the pilot's seeds say 'much worse'; the fresh seeds say 'better': only the fresh ones count
    collapsed = {label: 0.10 if label.startswith("MoNNA") else mean for label, mean in worse.items()}
    pilot, fresh = runs(collapsed, range(4)), runs(better, range(4, 18))
    ev = Evidence({label: pilot[label] + fresh[label] for label in better})
    assert judge(ev).outcome == claims.REPRODUCED
    assert judge(Evidence(pilot)).outcome == claims.INCONCLUSIVE  # the pilot alone: no judging seed
    short = Evidence({label: runs(better, range(4, 17))[label] for label in better})
    assert judge(short).outcome == claims.INCONCLUSIVE  # 13 of 14 planned


def test_monna_baselines_second_plan_sizes_each_arm_from_its_pilot_and_judges_fresh_seeds_only():
    experiment = EXPERIMENTS.get("monna-baselines-mnist")
    spec = experiment.scales["quick"]
    seeds = monna.BASELINE_ARM_SEEDS
    # the bimodal geometric median without momentum under label flip needs the most; MoNNA's arm takes its
    # comparisons' largest need; a tight comparison needs the minimum
    assert seeds["geometric-median beta=0 label-flip"] == seeds["MoNNA label-flip"] == spec.seeds == 24
    assert seeds["MoNNA ALIE"] == max(seeds[monna.baseline(g, m, "ALIE")] for g in monna.BASELINES
                                      for m in (True, False))
    assert seeds["geometric-median label-flip"] == claims.MIN_SEEDS
    cells = experiment.cells("quick")
    assert len(cells) == sum(seeds.values())
    assert {seed for _, seed in cells} == set(range(4, 28))  # fresh: the pilot's seeds 0-3 never run again
    assert sorted(seed for s, seed in cells if s.label == "trimmed-mean label-flip") == [4, 5, 6, 7]
    judge = experiment.claims[0].judge

    def runs(mean_of, seeds_of) -> Evidence:
        return Evidence({label: [_run(s, worker0_test_acc=[0.5] + [mean_of(label) + 0.002 * (s % 3)] * 3,
                                      test_acc=[0.5] + [mean_of(label)] * 3) for s in seeds_of(label)]
                         for label in seeds})

    fine = lambda label: 0.95  # noqa: E731 -- every arm equal: MoNNA no worse than any baseline
    planned = lambda label: range(4, 4 + seeds[label])  # noqa: E731
    assert judge(runs(fine, planned)).outcome == claims.REPRODUCED
    # one arm a seed short of its own plan: no verdict
    short = lambda label: range(4, 4 + seeds[label] - (label == "trimmed-mean FOE"))  # noqa: E731
    verdict = judge(runs(fine, short))
    assert verdict.outcome == claims.INCONCLUSIVE and "trimmed-mean FOE 5 of 6" in verdict.detail
    # the pilot's seeds alone, even complete in number, never count
    assert judge(runs(fine, lambda label: range(seeds[label]))).outcome == claims.INCONCLUSIVE
    # MoNNA 5 points under trimmed mean on the fresh seeds: refuted
    worse = lambda label: 0.90 if label == "MoNNA sign-flip" else 0.95  # noqa: E731
    assert judge(runs(worse, planned)).outcome == claims.NOT_REPRODUCED


def test_monna_baselines_third_plan_judges_its_one_part_on_seeds_neither_arm_ran_before():
    experiment = EXPERIMENTS.get("monna-baselines-mnist")
    second, n = monna.SECOND_PLAN_SEEDS, monna.RERUN_SEEDS
    ours, theirs = monna.monna("FOE"), monna.RERUN_BASELINE
    # sized from the second plan's runs of the part (MoNNA 94.9 +- 0.3, trimmed mean beta=0 59.6 +- 18.5 %)
    assert n == claims.seeds_for_effect(0.0031019, 0.1853189, 0.9493571 - 0.5963333 + 0.02) == 4
    cells = experiment.cells("quick")
    assert sorted(seed for s, seed in cells if s.label == theirs) == list(range(4, 4 + second[theirs] + n))
    assert sorted(seed for s, seed in cells if s.label == ours) == list(range(4, 4 + second[ours] + n))
    assert list(monna.part_seeds(ours, True)) == [11, 12, 13, 14]
    assert list(monna.part_seeds(theirs, True)) == [7, 8, 9, 10]
    judge = experiment.claims[0].judge

    def runs(mean_of) -> Evidence:
        return Evidence({label: [_run(s, worker0_test_acc=[0.5] + [mean_of(label, s) + 0.002 * (s % 3)] * 3,
                                      test_acc=[0.5] + [mean_of(label, s)] * 3)
                                 for s in range(4, 4 + monna.BASELINE_ARM_SEEDS[label])]
                         for label in monna.BASELINE_ARM_SEEDS})

    # the baseline 4 points above MoNNA on its second-plan seeds, equal on the third plan's: those never count
    early_high = lambda label, s: 0.99 if label == theirs and s < 7 else 0.95  # noqa: E731
    assert judge(runs(early_high)).outcome == claims.REPRODUCED
    # and the other way round: equal on the second plan's seeds, 4 points above MoNNA on the third plan's
    late_high = lambda label, s: 0.99 if label == theirs and s >= 7 else 0.95  # noqa: E731
    verdict = judge(runs(late_high))
    assert verdict.outcome == claims.NOT_REPRODUCED and "third plan: seeds 11-14 and 7-10" in verdict.detail
    # MoNNA's third-plan seeds judge that part only: the other FOE parts keep MoNNA's seeds 4-10
    monna_late_low = lambda label, s: 0.90 if label == ours and s >= 11 else 0.95  # noqa: E731
    detail = judge(runs(monna_late_low)).detail
    assert "vs trimmed-mean FOE: reproduced" in detail and f"vs {theirs}: not reproduced" in detail


def test_settings_may_plan_their_own_judging_seeds_up_to_their_scales():
    from repro.experiments import Experiment, Scale, Setting

    spec = Scale((Setting("a", ("t",)), Setting("b", ("t",), seeds=2)), seeds=4, first_seed=1)
    cells = Experiment("x", "P1", "", {"quick": spec}).cells("quick")
    assert [(s.label, seed) for s, seed in cells] == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("a", 4)]
    # a --seeds override applies to every setting
    assert len(Experiment("x", "P1", "", {"quick": spec}).cells("quick", seeds=3)) == 6
    with pytest.raises(ValueError, match="more judging seeds"):
        Scale((Setting("a", ("t",), seeds=5),), seeds=4)


def test_dpsgd_tracks_is_non_inferiority_of_the_final_training_loss():
    def ev(ring: float) -> Evidence:
        return Evidence({dpsgd.EVERY: [_run(s, trainset_loss=[1.0, 0.50 + 0.005 * s]) for s in range(3)],
                         dpsgd.RING: [_run(s, trainset_loss=[1.0, ring + 0.005 * s], consensus_distance=[0.1, 0.05])
                                      for s in range(3)]})
    judge = dpsgd.judge_tracks(range(3))
    assert judge(ev(0.52)).outcome == claims.REPRODUCED
    assert judge(ev(0.70)).outcome == claims.NOT_REPRODUCED
    extra = ev(0.52)  # runs after the plan's seeds (`--seeds 60`) that would refute: not counted
    extra.runs[dpsgd.RING] += [_run(s, trainset_loss=[1.0, 0.90], consensus_distance=[0.1, 0.05]) for s in range(3, 20)]
    assert judge(extra).outcome == claims.REPRODUCED


def test_dpsgd_tracks_n8_judges_fresh_seeds_only_its_pilots_seeds_never():
    scale = EXPERIMENTS.get("dpsgd-fashion-mnist-n8").scales["quick"]
    judged = scale.judging_seeds()
    assert judged[0] == max(dpsgd.PILOT_N8.seeds) + 1 and len(judged) == dpsgd.TRACK_SEEDS_N8
    assert not set(judged) & set(dpsgd.PILOT_N8.seeds)
    judge = EXPERIMENTS.get("dpsgd-fashion-mnist-n8").claims[0].judge

    def ev(seeds, ring: float) -> Evidence:
        return Evidence({dpsgd.EVERY: [_run(s, trainset_loss=[1.0, 0.50 + 0.001 * (s % 3)]) for s in seeds],
                         dpsgd.RING: [_run(s, trainset_loss=[1.0, ring + 0.001 * (s % 3)],
                                           consensus_distance=[0.1, 0.05]) for s in seeds]})
    pilot_only = judge(ev(dpsgd.PILOT_N8.seeds, 0.50))
    assert pilot_only.outcome == claims.INCONCLUSIVE and f"0 of {dpsgd.TRACK_SEEDS_N8}" in pilot_only.detail
    assert judge(ev([*dpsgd.PILOT_N8.seeds, *judged], 0.50)).outcome == claims.REPRODUCED
    assert judge(ev([*dpsgd.PILOT_N8.seeds, *judged[:-1]], 0.50)).outcome == claims.INCONCLUSIVE
    # N = 4 keeps its first plan: seeds 0-2, sized on the N = 4 pilot
    assert EXPERIMENTS.get("dpsgd-fashion-mnist-n4").scales["quick"].judging_seeds() == [0, 1, 2]


def test_dpsgd_large_lr_counts_seeds_at_chance_and_training():
    def ev(every_fails_from: float, ring_fails_from: float) -> Evidence:
        runs = {}
        for algo, fails in ((dpsgd.EVERY, every_fails_from), (dpsgd.RING, ring_fails_from)):
            for lr in dpsgd.LARGE_LRS:
                acc = 0.10 if lr >= fails else 0.55
                runs[dpsgd.lr_label(algo, lr)] = [_run(s, test_acc=[acc]) for s in range(3)]
        return Evidence(runs)
    assert dpsgd.judge_large_lr(ev(every_fails_from=3.2, ring_fails_from=6.4)).outcome == claims.REPRODUCED
    # SSGD never fails inside the sweep: no learning rate separates them
    assert dpsgd.judge_large_lr(ev(every_fails_from=99, ring_fails_from=99)).outcome == claims.NOT_REPRODUCED
    assert dpsgd.judge_large_lr(Evidence({})).outcome == claims.INCONCLUSIVE


def test_the_second_large_lr_plan_sweeps_below_the_first_and_judges_only_its_own_lrs():
    assert max(dpsgd.LOW_LRS) < min(dpsgd.LARGE_LRS)
    (claim,) = EXPERIMENTS.get("dpsgd-large-lr-low-cifar10").claims
    runs = {dpsgd.lr_label(algo, lr): [_run(s, test_acc=[0.10]) for s in range(3)]  # the first plan: all at chance
            for algo in dpsgd.ALGOS for lr in dpsgd.LARGE_LRS}
    assert claim.judge(Evidence(runs)).outcome == claims.INCONCLUSIVE  # none of its own lrs has run
    for lr in dpsgd.LOW_LRS:  # every-step at chance from 0.2, the ring trains up to 0.3
        runs[dpsgd.lr_label(dpsgd.EVERY, lr)] = [_run(s, test_acc=[0.10 if lr >= 0.2 else 0.5]) for s in range(3)]
        runs[dpsgd.lr_label(dpsgd.RING, lr)] = [_run(s, test_acc=[0.5]) for s in range(3)]
    verdict = claim.judge(Evidence(runs))
    assert verdict.outcome == claims.REPRODUCED and "[0.2, 0.3]" in verdict.detail


def test_dpsgd_large_lr_runs_a_resnet_with_batchnorm_sgd_and_eight_workers():
    """The quick preset's default ResNet recipe is P2's BN-free one; with it SGD at these step sizes overflows in two
    steps, so every cell must resolve to BN (the setting, not the outcome, is what this pins)."""
    from repro.cli import _invoke_run

    settings = [s for name in ("dpsgd-large-lr-cifar10", "dpsgd-large-lr-low-cifar10")
                for s in EXPERIMENTS.get(name).scales["quick"].settings]
    assert len(settings) == 16
    for setting in settings:
        config, world = _invoke_run([*setting.argv, "--seed", "1", "--out", "unused", "--resolve-only"])
        assert world == 8 and config.task.options["bn"] is True, setting.label
        assert config.optimizer.name == "sgd" and config.optimizer.hparams["momentum"] == 0.9, setting.label
        assert config.schedule.name == "constant", setting.label  # no warm-up


def test_every_new_experiment_is_registered_with_claims_and_a_reason():
    for name in ("monna-mnist", "monna-baselines-mnist", "dpsgd-fashion-mnist-n4", "dpsgd-fashion-mnist-n8",
                 "dpsgd-large-lr-cifar10", "dpsgd-large-lr-low-cifar10"):
        experiment = EXPERIMENTS.get(name)
        assert experiment.claims and all(spec.why for spec in experiment.scales.values())
        labels = [s.label for s in experiment.scales["quick"].settings]
        assert len(set(labels)) == len(labels)


def test_hyperbolic_schedule_is_the_authors_lr_over_one_plus_steps_over_decay():
    factor = schedules.make("hyperbolic", 12, half_life=1.0)
    assert [factor(e) for e in range(4)] == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])


def test_the_monna_authors_cnn_has_their_shapes():
    from repro.tasks.mnist import SimpleConvNet

    model = SimpleConvNet()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # conv 1x20x5x5, conv 20x50x5x5, fc 800x500, fc 500x10, with biases: simples-conv's 431,080 parameters
    assert sum(p.numel() for p in model.parameters()) == 431_080
