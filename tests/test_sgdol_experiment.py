"""P3's experiments (repro/experiments/sgdol.py): grid cells are chosen on the selection seed and judged on fresh
seeds (D8), a cell short of its planned judging seeds is never judged, a best cell at a grid edge cannot reproduce
(D11), the cells `repro reproduce` runs follow the selection, and the seed count follows the pilot's formula."""
from types import SimpleNamespace

import pandas as pd
import pytest

from repro import claims
from repro.claims import Evidence
from repro.experiments import EXPERIMENTS
from repro.experiments import sgdol as p3

QUICK = EXPERIMENTS.get("sgdol-fashion-mnist")
SPEC = QUICK.scales["quick"]
GRIDS = SPEC.grids()
JUDGING = SPEC.judging_seeds()


def _run(seed: int, acc: float, lr: float = 0.05, status: str = "done"):
    """A complete run whose last 3 epochs all score ``acc`` (so the judged last-3 mean is ``acc``)."""
    metrics = pd.DataFrame({"epoch": [1.0, 2.0, 3.0], "test_acc": [acc] * 3, "lr": [0.1, lr, lr],
                            "status": ["", "", status]})
    return SimpleNamespace(seed=seed, metrics=metrics, complete=True)


def _evidence(selection: dict[str, float], judging: dict[str, list[float]]) -> Evidence:
    runs: dict[str, list] = {s.label: [] for s in SPEC.settings}
    for label, acc in selection.items():
        runs[label].append(_run(0, acc))
    for label, values in judging.items():
        runs[label] += [_run(seed, acc) for seed, acc in zip(JUDGING, values)]
    return Evidence(runs)


def _selection(best: dict[str, str]) -> dict[str, float]:
    """Seed-0 accuracies: each grid's ``best[grid]`` label scores 0.88, the others lower."""
    return {label: (0.88 if label == best[grid] else 0.80) for grid, labels in GRIDS.items() for label in labels}


def _middle() -> dict[str, str]:
    return {grid: labels[1] for grid, labels in GRIDS.items()}


def _judge(claim_id: str, ev: Evidence, experiment=QUICK):
    return next(c for c in experiment.claims if c.id == claim_id).judge(ev)


def _same(value: float) -> list[float]:
    return [value + d for d in (0.0, 0.004, -0.004, 0.002, -0.002, 0.001, -0.001)][:SPEC.seeds] + \
        [value] * max(0, SPEC.seeds - 7)


def test_the_grid_cell_is_chosen_on_the_selection_seed_alone():
    chosen = _middle()
    ev = _evidence(_selection(chosen), {})
    assert SPEC.chosen(ev) == chosen
    # judging seeds where another cell looks best must not move the choice (no winner's curse)
    others = {grid: labels[2] for grid, labels in GRIDS.items()}
    ev = _evidence(_selection(chosen), {label: [0.99] * SPEC.seeds for label in others.values()})
    assert SPEC.chosen(ev) == chosen


def test_the_chosen_cells_are_judged_on_the_fresh_seeds_only():
    chosen = _middle()
    selection = {label: (0.99 if label in chosen.values() else 0.80) for labels in GRIDS.values() for label in labels}
    judging = {p3.SGDOL: _same(0.85), **{label: _same(0.85) for label in chosen.values()}}
    ev = _evidence(selection, judging)
    for label in chosen.values():  # a pilot's seeds, and seeds after the plan's, are neither selection nor judging
        ev.runs[label] += [_run(seed, 0.99) for seed in (*p3.PILOT_SEEDS, *range(max(JUDGING) + 1, 60))]
    verdict = _judge("P3-match", ev)
    # seed 0's (and the other seeds') 0.99 left out: equal accuracies, the interval inside the margin
    assert verdict.outcome == claims.REPRODUCED, verdict
    assert "cells chosen on seed 0" in verdict.measured
    worse = {**judging, p3.SGDOL: _same(0.80)}
    assert _judge("P3-match", _evidence(selection, worse)).outcome == claims.NOT_REPRODUCED


def test_a_chosen_cell_short_of_its_planned_seeds_is_never_judged_nor_replaced():
    chosen = _middle()
    judging = {p3.SGDOL: _same(0.85), **{label: _same(0.85) for label in chosen.values()}}
    short = dict(judging)
    short[chosen["adam"]] = short[chosen["adam"]][:2]  # two judging seeds
    # another adam cell with every seed and a poor selection score must not stand in for it
    short[GRIDS["adam"][0]] = _same(0.60)
    verdict = _judge("P3-match", _evidence(_selection(chosen), short))
    assert verdict.outcome == claims.INCONCLUSIVE, verdict
    assert "planned judging seeds" in verdict.detail and GRIDS["adam"][0] not in verdict.measured


def test_an_incomplete_selection_decides_nothing_and_runs_no_judging_cell_of_that_grid():
    chosen = _middle()
    selection = _selection(chosen)
    del selection[GRIDS["sgd"][-1]]
    ev = _evidence(selection, {p3.SGDOL: _same(0.85), **{label: _same(0.85) for label in chosen.values()}})
    verdict = _judge("P3-match", ev)
    assert verdict.outcome == claims.INCONCLUSIVE and "selection incomplete: sgd" in verdict.detail
    cells = {(s.label, seed) for s, seed in QUICK.cells("quick", ev=ev)}
    assert not any(label.startswith("sgd ") and seed in JUDGING for label, seed in cells)
    assert {(chosen["adam"], seed) for seed in JUDGING} <= cells
    assert QUICK.pending_judging_runs("quick", ev=ev) == SPEC.seeds


def test_cells_run_each_grid_on_the_selection_seed_and_only_sgdol_on_judging_seeds_before_a_choice():
    cells = QUICK.cells("quick")
    grid_cells = [(s.label, seed) for s, seed in cells if s.grid]
    assert {seed for _, seed in grid_cells} == set(p3.SELECTION_SEEDS)
    assert len(grid_cells) == sum(len(labels) for labels in GRIDS.values())
    assert [(s.label, seed) for s, seed in cells if not s.grid] == [(p3.SGDOL, seed) for seed in JUDGING]
    assert not set(JUDGING) & set(p3.SELECTION_SEEDS) and not set(JUDGING) & set(p3.PILOT_SEEDS)
    assert QUICK.pending_judging_runs("quick") == len(GRIDS) * SPEC.seeds


def test_a_best_at_a_grid_edge_cannot_reproduce_but_can_refute():
    edge = {**_middle(), "sgd": GRIDS["sgd"][-1]}
    judging = {p3.SGDOL: _same(0.85), **{label: _same(0.85) for label in edge.values()}}
    verdict = _judge("P3-match", _evidence(_selection(edge), judging))
    assert verdict.outcome == claims.INCONCLUSIVE and "not bracketed" in verdict.detail, verdict
    worse = {**judging, p3.SGDOL: _same(0.80)}
    assert _judge("P3-match", _evidence(_selection(edge), worse)).outcome == claims.NOT_REPRODUCED


def test_a_diverged_run_counts_as_a_failure_not_as_its_last_evaluation():
    value = p3.judged_accuracy(3)
    assert value(_run(0, 0.9, status="diverged")) == 0.0
    assert value(_run(0, 0.9)) == pytest.approx(0.9)


def test_stepsize_claim_uses_the_judging_seeds():
    runs = {s.label: [] for s in SPEC.settings}
    runs[p3.SGDOL] = [_run(0, 0.85, lr=0.5)] + [_run(seed, 0.85, lr=0.05) for seed in JUDGING]
    assert _judge("P3-stepsize", Evidence(runs)).outcome == claims.REPRODUCED  # seed 0's 0.5 > 2/M left out
    runs[p3.SGDOL] = [_run(seed, 0.85, lr=0.5) for seed in JUDGING]
    assert _judge("P3-stepsize", Evidence(runs)).outcome == claims.NOT_REPRODUCED


def test_seeds_for_the_margin_follow_the_power_formula():
    # n = 5 for std 0.1 and margin 0.2 points: (t(8) 2.306 + 0.842) * sqrt(2/5) = 1.99 <= 2, n = 4 gives 2.33
    assert claims.seeds_for_margin(0.001, 0.002) == 5 == p3.PAPER_SEEDS
    assert claims.seeds_for_margin(0.0001, 0.01) == claims.MIN_SEEDS
    assert claims.seeds_for_margin(0.009, 0.01) > claims.seeds_for_margin(0.005, 0.01) > claims.MIN_SEEDS


def test_a_pilot_sizes_the_judging_seeds_only_once_it_has_run():
    pending = claims.Pilot("SGDOL cell", (900, 901, 902))
    assert pending.std is None and pending.seeds_for(0.01) == claims.MIN_SEEDS
    assert "until the pilot (SGDOL cell, seeds 900, 901, 902)" in pending.text(claims.MIN_SEEDS, "'reproduced'")
    ran = claims.Pilot("SGDOL cell", (900, 901, 902), (0.84, 0.86, 0.85), measure="test accuracy", percent=True)
    assert ran.std == pytest.approx(0.01)
    n = ran.seeds_for(0.01)
    assert n == claims.seeds_for_margin(0.01, 0.01) > claims.MIN_SEEDS
    assert f"test accuracy 84.00, 86.00, 85.00 %, std 1.00 points; n = {n} judging seeds" in ran.text(n, "x")


def test_short_of_plan_names_every_arm_until_each_has_its_planned_seeds():
    assert claims.short_of_plan({"A": 2, "B": 3}, 3) == "A 2, B 3 of the 3 planned judging seeds complete"
    assert claims.short_of_plan({"A": 3, "B": 4}, 3) is None


def test_the_paper_experiment_follows_the_authors_main_py():
    paper = EXPERIMENTS.get("sgdol-mnist").scales["paper"]
    sgdol = next(s for s in paper.settings if s.label == p3.SGDOL)
    assert sgdol.argv[:3] == ("convnet-mnist", "--preset", "paper") and "same-batch" in sgdol.argv
    for grid, labels in paper.grids().items():
        assert len(labels) >= 5, grid  # room for the best to sit inside
    assert paper.seeds >= claims.MIN_SEEDS and paper.selection_seeds == (0,)


@pytest.mark.slow  # resolves every setting through the command line and judges through the report
def test_p3_claims_are_judged_from_run_folders_both_ways(tmp_path):
    from test_experiments import _fake_runs, _verdicts

    chosen = _middle()
    for folder, sgdol_acc, sgdol_lr, outcome in (("a", 0.85, 0.14, claims.REPRODUCED),
                                                 ("b", 0.70, 0.25, claims.NOT_REPRODUCED)):  # 0.25 > 2/M
        _fake_runs(tmp_path / folder, QUICK.name, {label: [acc] for label, acc in _selection(chosen).items()},
                   seeds=p3.SELECTION_SEEDS)
        judging = {p3.SGDOL: [sgdol_acc] * SPEC.seeds, **{label: [0.85] * SPEC.seeds for label in chosen.values()}}
        _fake_runs(tmp_path / folder, QUICK.name, judging, seeds=JUDGING, extra={p3.SGDOL: {"lr": sgdol_lr}})
        verdicts = _verdicts(tmp_path / folder)
        assert verdicts["P3-match"].outcome == outcome, verdicts["P3-match"]
        assert all(label in verdicts["P3-match"].measured for label in chosen.values())
        assert verdicts["P3-stepsize"].outcome == outcome
    assert verdicts["P1-track-lm"].outcome == claims.NOT_RUN  # no runs of that experiment


@pytest.mark.slow  # resolves the SGDOL setting through the command line
def test_pilot_values_read_the_pilot_seeds_of_the_sgdol_cell_in_seed_order(tmp_path):
    from test_experiments import _fake_runs

    _fake_runs(tmp_path, QUICK.name, {p3.SGDOL: [0.82, 0.80, 0.81, 0.99]}, seeds=[*reversed(p3.PILOT_SEEDS), 1])
    assert p3.pilot_values(QUICK.folder(tmp_path, "quick")) == pytest.approx((0.81, 0.80, 0.82))  # seed 1 left out
