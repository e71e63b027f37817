"""P2's rules on fixture numbers: the depth interval at many seeds (it raised at 32), the scale-free rule both ways
(Adam-l2 changed / unchanged), tuned grids chosen on the selection seed and judged on fresh seeds only, and the seeds
computed from a pilot's std."""
from dataclasses import dataclass

import pandas as pd
import pytest

from repro import claims
from repro.claims import Evidence
from repro.experiments import EXPERIMENTS
from repro.experiments import adamw


@dataclass
class FakeRun:
    seed: int
    metrics: pd.DataFrame


def _runs(accuracies, first_seed=0, diverged=()):
    runs = []
    for i, acc in enumerate(accuracies):
        seed = first_seed + i
        status = "diverged" if seed in diverged else "done"
        runs.append(FakeRun(seed, pd.DataFrame({"epoch": [1.0, 2.0], "test_acc": [None, acc], "status": ["", status]})))
    return runs


def _evidence(experiment, scale, by_label):
    """Evidence as `evidence()` builds it: every label of the scale present, runs where given."""
    labels = [s.label for s in EXPERIMENTS.get(experiment).scales[scale].settings]
    assert set(by_label) <= set(labels), set(by_label) - set(labels)
    return Evidence({label: by_label.get(label, []) for label in labels})


def _spread(center, n, step=0.001):
    return [center + step * ((i % 3) - 1) for i in range(n)]


def test_depth_interval_decides_at_many_seeds_without_raising():
    n = 40  # the old rule indexed the t table with df - 1 and raised from 32 seeds on
    grow = {"ResNet-20 AdamW": _spread(0.50, n), "ResNet-20 Adam-l2": _spread(0.50, n),
            "ResNet-56 AdamW": _spread(0.45, n), "ResNet-56 Adam-l2": _spread(0.40, n)}
    verdict = adamw.judge_depth(_evidence("adamw-depth", "quick", {k: _runs(v) for k, v in grow.items()}))
    assert verdict.outcome == claims.REPRODUCED, verdict
    shrink = {**grow, "ResNet-56 AdamW": _spread(0.35, n)}
    verdict = adamw.judge_depth(_evidence("adamw-depth", "quick", {k: _runs(v) for k, v in shrink.items()}))
    assert verdict.outcome == claims.NOT_REPRODUCED, verdict
    few = adamw.judge_depth(_evidence("adamw-depth", "quick", {}))
    assert few.outcome == claims.INCONCLUSIVE and few.seeds_to_decide == adamw.DEPTH_SEEDS


def test_depth_growth_interval_matches_a_hand_computation():
    cells = {("ResNet-20", "adamw"): [0.50, 0.52, 0.54], ("ResNet-20", "adam-l2"): [0.50, 0.50, 0.50],
             ("ResNet-56", "adamw"): [0.40, 0.44, 0.48], ("ResNet-56", "adam-l2"): [0.30, 0.30, 0.30]}
    growth, low, high, df = adamw.growth_interval(cells)
    # gaps 0.02 and 0.14; variances of the means 0.0004/3 and 0.0016/3 (the constant arms add 0); df = 4 * ... = 2.9
    assert growth == pytest.approx(0.12)
    variance = (0.0004 + 0.0016) / 3
    df_hand = variance ** 2 / ((0.0004 / 3) ** 2 / 2 + (0.0016 / 3) ** 2 / 2)
    assert df == pytest.approx(df_hand)
    assert (high - low) / 2 == pytest.approx(claims._t975(df_hand) * variance ** 0.5)


def _scale_free(n, adam_l2_scaled, adamw_scaled=0.60):
    scale = EXPERIMENTS.get("adamw-scale-free").scales["quick"]
    by_label = {}
    for setting in scale.settings:
        optimizer, mult = setting.label.split()[0], setting.label.split()[-1]
        center = 0.60 if mult == "x1" else (adamw_scaled if optimizer == "AdamW" else adam_l2_scaled)
        by_label[setting.label] = _runs(_spread(center, n))
    return _evidence("adamw-scale-free", "quick", by_label)


def test_scale_free_is_reproduced_when_adam_l2_clearly_changes_and_refuted_when_it_clearly_does_not():
    n = adamw.SEEDS["scale-free"]
    changed = adamw._judge_scale_free(adamw.SCALE_FREE_SCALES)(_scale_free(n, adam_l2_scaled=0.65))
    assert changed.outcome == claims.REPRODUCED, changed
    assert "tolerance ±1 points" in changed.detail and "tolerance ±0" not in changed.detail
    unchanged = adamw._judge_scale_free(adamw.SCALE_FREE_SCALES)(_scale_free(n, adam_l2_scaled=0.601))
    assert unchanged.outcome == claims.NOT_REPRODUCED, unchanged
    assert "Adam-l2 x10 changed: not reproduced" in unchanged.detail
    adamw_moves = adamw._judge_scale_free(adamw.SCALE_FREE_SCALES)(_scale_free(n, 0.65, adamw_scaled=0.65))
    assert adamw_moves.outcome == claims.NOT_REPRODUCED
    extra = _scale_free(n, adam_l2_scaled=0.65)  # runs after the plan's seeds (`--seeds 60`) that would refute
    label = next(label for label in extra.runs if label.startswith("AdamW") and label.endswith("x10"))
    extra.runs[label] += _runs([0.40] * 20, first_seed=n)
    assert adamw._judge_scale_free(adamw.SCALE_FREE_SCALES)(extra).outcome == claims.REPRODUCED
    early = adamw._judge_scale_free(adamw.SCALE_FREE_SCALES)(_scale_free(max(3, n - 1), adam_l2_scaled=0.65))
    if n > 3:  # a verdict waits for the planned seeds
        assert early.outcome == claims.INCONCLUSIVE and "planned judging seeds" in early.detail


def _tuned(experiment, selection, judging, n):
    """Runs of a tuned experiment: ``selection[label]`` on seed 0, ``judging[label]`` on seeds 1..n."""
    by_label = {label: _runs([acc]) for label, acc in selection.items()}
    for label, acc in judging.items():
        by_label.setdefault(label, [])
        by_label[label] += _runs(_spread(acc, n), first_seed=1)
    return _evidence(experiment, "quick", by_label)


def test_tuned_grids_choose_on_the_selection_seed_and_judge_on_fresh_seeds_only():
    n = adamw.SEEDS["nobn"]
    judge = adamw._judge_tuned(adamw.NOBN_SCALES, lambda w, a: claims.better(w, a, True, unit=claims.POINTS))
    w = [f"AdamW lr=0.001 lambda={lam:g}" for lam in adamw.QUICK_LAMBDAS]
    a = [f"Adam-l2 lr=0.001 lambda={lam:g}" for lam in adamw.QUICK_LAMBDAS]
    selection = {w[0]: 0.70, w[1]: 0.50, w[2]: 0.50, a[0]: 0.50, a[1]: 0.60, a[2]: 0.50}
    # AdamW's lucky cell w[0] is chosen on seed 0 but is worse on the fresh seeds; w[1] (not chosen) would win there
    judging = {w[0]: 0.55, w[1]: 0.90, a[1]: 0.60}
    verdict = judge(_tuned("adamw-nobn", selection, judging, n))
    assert verdict.outcome == claims.NOT_REPRODUCED, verdict  # judged on w[0]'s fresh seeds, not on its 0.70
    assert w[0] in verdict.measured and f"(n={n})" in verdict.measured and "70" not in verdict.measured
    # runs after the plan's judging seeds (e.g. `--seeds 60`) are not counted, whatever they say
    more = _tuned("adamw-nobn", selection, judging, n)
    more.runs[w[0]] += _runs([0.99] * 20, first_seed=n + 1)
    assert judge(more).outcome == claims.NOT_REPRODUCED and f"(n={n})" in judge(more).measured
    # a grid with a cell lacking its selection run is not chosen at all, whatever its judging runs say
    incomplete = {k: v for k, v in selection.items() if k != w[2]}
    verdict = judge(_tuned("adamw-nobn", incomplete, judging, n))
    assert verdict.outcome == claims.INCONCLUSIVE and "selection incomplete" in verdict.detail
    # the chosen cells need the planned judging seeds (never fewer than 3)
    verdict = judge(_tuned("adamw-nobn", selection, judging, 2))
    assert verdict.outcome == claims.INCONCLUSIVE and "planned judging seeds" in verdict.detail


def test_a_diverged_run_counts_as_chance_not_as_missing():
    run = _runs([0.8], diverged={0})[0]
    assert adamw.judged_accuracy(run) == adamw.CHANCE
    assert adamw.choose(Evidence({"a": [run], "b": _runs([0.5])}), ["a", "b"]) == "b"


def test_seeds_planned_from_the_pilot_std():
    seeds = adamw.planned_seeds(0.01)
    assert seeds["bn"] == claims.seeds_for_margin(0.01, adamw.TOLERANCE, adamw.Z90) > seeds["nobn"] >= claims.MIN_SEEDS
    assert seeds["scale-free"] >= seeds["bn"]
    assert adamw.planned_seeds(0.02)["bn"] > seeds["bn"]
    assert adamw.planned_seeds(float("nan")) == {k: claims.MIN_SEEDS for k in seeds}  # before the pilot


def test_bn_with_both_at_lambda_zero_is_one_computation_and_needs_three_seeds():
    judge = adamw._judge_tuned(adamw.BN_SCALES, lambda w, a: claims.within(w, a, adamw.TOLERANCE, unit=claims.POINTS))
    labels = {o: [f"{o} lr=0.005 lambda={lam:g}" for lam in (0.0, *adamw.QUICK_LAMBDAS)] for o in ("AdamW", "Adam-l2")}
    selection = {label: (0.8 if label.endswith("lambda=0") else 0.7) for o in labels for label in labels[o]}
    judging = {labels["AdamW"][0]: 0.8, labels["Adam-l2"][0]: 0.8}  # the same runs: identical values
    verdict = judge(_tuned("adamw-bn", selection, judging, claims.MIN_SEEDS))
    assert verdict.outcome == claims.REPRODUCED, verdict
    selection[labels["AdamW"][1]] = 0.9  # AdamW prefers lambda > 0: two computations, the planned seeds apply
    verdict = judge(_tuned("adamw-bn", selection, {**judging, labels["AdamW"][1]: 0.8}, claims.MIN_SEEDS))
    assert verdict.outcome == (claims.INCONCLUSIVE if adamw.SEEDS["bn"] > claims.MIN_SEEDS else claims.REPRODUCED)


def _paired(adam_l2_shift, adamw_shift=0.0, short=0, first_seed=adamw.PAIRED_FIRST_SEED):
    """Every setting on its planned seeds: a large seed-to-seed spread shared by the multipliers of a seed, plus a
    shift at x10 / x100 and a small per-run wobble."""
    scale = EXPERIMENTS.get("adamw-scale-free-paired").scales["quick"]
    by_label = {}
    for setting in scale.settings:
        optimizer, mult = setting.label.split()[0], setting.label.split()[-1]
        n = adamw.PAIRED_SEEDS["adamw" if optimizer == "AdamW" else "adam-l2"] - short
        shift = 0.0 if mult == "x1" else (adamw_shift if optimizer == "AdamW" else adam_l2_shift)
        accs = [0.40 + 0.03 * ((7 * i) % 5 - 2) + shift + 0.001 * ((i + len(mult)) % 3 - 1) for i in range(n)]
        by_label[setting.label] = _runs(accs, first_seed=first_seed)
    return _evidence("adamw-scale-free-paired", "quick", by_label)


def test_paired_scale_free_decides_where_the_shared_seed_spread_would_hide_the_change():
    judge = adamw._judge_scale_free_paired(adamw.PAIRED_SCALE)
    changed = judge(_paired(adam_l2_shift=0.015))
    assert changed.outcome == claims.REPRODUCED, changed
    # the same numbers unpaired: a 1.5-point change under a 4-point seed spread is not outside ±1 point
    a = [r.metrics["test_acc"].iloc[-1] for r in _paired(0.015).runs["Adam-l2 lambda=0.01 x100"]]
    b = [r.metrics["test_acc"].iloc[-1] for r in _paired(0.015).runs["Adam-l2 lambda=0.01 x1"]]
    assert claims.within(a, b, adamw.TOLERANCE)[0] == claims.INCONCLUSIVE
    unchanged = judge(_paired(adam_l2_shift=0.001))
    assert unchanged.outcome == claims.NOT_REPRODUCED and "Adam-l2 x10 changed: not reproduced" in unchanged.detail
    adamw_moves = judge(_paired(adam_l2_shift=0.015, adamw_shift=0.02))
    assert adamw_moves.outcome == claims.NOT_REPRODUCED
    borderline = judge(_paired(adam_l2_shift=0.0102))
    assert borderline.outcome == claims.INCONCLUSIVE and borderline.seeds_to_decide > adamw.PAIRED_SEEDS["adam-l2"]


def test_paired_scale_free_waits_for_its_planned_fresh_seeds():
    judge = adamw._judge_scale_free_paired(adamw.PAIRED_SCALE)
    early = judge(_paired(adam_l2_shift=0.015, short=1))
    assert early.outcome == claims.INCONCLUSIVE and "planned seeds" in early.detail
    assert early.seeds_to_decide == adamw.PAIRED_SEEDS["adam-l2"]  # the report shows the plan's count meanwhile
    old_seeds = judge(_paired(adam_l2_shift=0.015, first_seed=0))  # the first plan's seeds are not this plan's
    assert old_seeds.outcome == claims.INCONCLUSIVE
    # sizes from the first plan (its pilot): paired std 0.50 / 1.18 points, Adam-l2's change 1.57 points
    assert adamw.PAIRED_SEEDS == {"adamw": 5, "adam-l2": 36}
    scale = adamw.PAIRED_SCALE
    assert all(min(scale.setting_seeds(s)) == 1000 for s in scale.settings)
