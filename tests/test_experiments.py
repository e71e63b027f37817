"""Experiments, claims and the report: the statistics against hand-computed values, every experiment's settings
resolve to distinct settings, verdicts from fixture runs (both ways), `repro reproduce --dry-run` and `repro report`
through the real command line."""
import json
import math

import pytest

from conftest import run_repro
from repro import claims
from repro.cli import _invoke_run, _setting_key
from repro.experiments import EXPERIMENTS, evidence
from repro.runlog import git_commit


def test_welch_interval_matches_a_hand_computation():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]
    # means 2 and 5; variances 1 and 20/3; se^2 = 1/3 + 5/3 = 2; df = 4 / ((1/3)^2/2 + (5/3)^2/3) = 4.07 -> 4
    low, high, df = claims.welch_interval(a, b)
    assert df == pytest.approx(4 / ((1 / 9) / 2 + (25 / 9) / 3))
    assert (low + high) / 2 == pytest.approx(-3.0)
    assert (high - low) / 2 == pytest.approx(2.776 * math.sqrt(2.0))  # t(0.975, 4)


def test_rules_give_all_three_verdicts_and_need_three_seeds():
    high, low = [0.90, 0.91, 0.92], [0.80, 0.81, 0.82]
    assert claims.better(high, low, higher_is_better=True)[0] == claims.REPRODUCED
    assert claims.better(low, high, higher_is_better=True)[0] == claims.NOT_REPRODUCED
    assert claims.better(low, high, higher_is_better=False)[0] == claims.REPRODUCED  # e.g. seconds
    assert claims.better([0.8, 0.9, 1.0], [0.85, 0.9, 0.95], higher_is_better=True)[0] == claims.INCONCLUSIVE
    assert claims.better(high[:2], low, higher_is_better=True)[0] == claims.INCONCLUSIVE  # n = 2
    assert claims.within(high, [0.905, 0.91, 0.915], 0.05)[0] == claims.REPRODUCED
    assert claims.within(high, low, 0.02)[0] == claims.NOT_REPRODUCED
    assert claims.at_least(low, high, margin=0.2, higher_is_better=True)[0] == claims.REPRODUCED
    assert claims.at_least(low, high, margin=0.01, higher_is_better=True)[0] == claims.NOT_REPRODUCED
    assert claims.combine([claims.REPRODUCED, claims.INCONCLUSIVE]) == claims.INCONCLUSIVE
    assert claims.combine([claims.REPRODUCED, claims.NOT_REPRODUCED]) == claims.NOT_REPRODUCED


def test_an_interval_of_accuracies_prints_in_the_units_of_the_measured_numbers():
    # accuracies are fractions in the logs and percent beside the verdict; the interval must say the same units
    outcome, text = claims.within([0.90, 0.91, 0.92], [0.905, 0.91, 0.915], 0.05, unit=claims.POINTS)
    assert outcome == claims.REPRODUCED
    assert text.startswith("difference 95% CI [-2.") and "] points (Welch" in text and "tolerance ±5 points" in text
    assert "margin 1 points" in claims.at_least([0.8] * 3, [0.81] * 3, 0.01, True, unit=claims.POINTS)[1]


@pytest.mark.slow  # resolves dozens of settings through the command line
def test_every_experiment_resolves_to_distinct_settings_with_a_reason_and_claims(tmp_path):
    for name in EXPERIMENTS.names():
        experiment = EXPERIMENTS.get(name)
        assert experiment.claims, name
        for scale, spec in experiment.scales.items():
            assert spec.why, (name, scale)
            keys = [_setting_key([*s.argv, "--out", str(tmp_path)]) for s in spec.settings]
            assert len(set(keys)) == len(keys), (name, scale)
            assert len({s.label for s in spec.settings}) == len(spec.settings)
            assert not any("--seed" in s.argv for s in spec.settings)


def _fake_runs(results, experiment, values, column="test_acc", extra=None, seeds=None):
    """Complete runs of ``experiment`` (quick) with ``values[label]`` = one final value per seed (seeds 0, 1, ...
    or ``seeds``)."""
    exp = EXPERIMENTS.get(experiment)
    folder = exp.folder(results, "quick")
    for setting in exp.scales["quick"].settings:
        for seed, value in zip(seeds or range(10_000), values.get(setting.label, [])):
            config, world = _invoke_run([*setting.argv, "--seed", str(seed), "--out", str(folder), "--resolve-only"])
            run = folder / config.task.name / f"{setting.label.replace(' ', '_')}_{seed}"
            run.mkdir(parents=True)
            # made from the checked-out code, as a real run records it (claims count runs from their rule commit on)
            env = {"cpu": "x86_64", "cpu_count": 2, "git_commit": git_commit()}
            (run / "config.json").write_text(json.dumps({**config.to_dict(), "world_size": world, "environment": env}))
            cols = {column: value, **((extra or {}).get(setting.label, {}))}
            (run / "metrics.csv").write_text("epoch," + ",".join(cols) + "\n1.0," + ",".join(map(str, cols.values())) + "\n")
            (run / "summary.json").write_text("{}")


def _verdicts(results):
    from repro.report import judge_all

    judged, _ = judge_all(results, _setting_key)
    return {j.claim_id: j.verdict for j in judged if j.scale == "quick"}


@pytest.mark.slow  # resolves dozens of settings through the command line
def test_dry_run_lists_only_missing_runs_and_report_writes_markdown_and_html(tmp_path):
    results = tmp_path / "results"
    spec = EXPERIMENTS.get("sgdol-fashion-mnist").scales["quick"]  # SGDOL on its judging seeds; grids not run yet
    n, grid_cells = spec.seeds, sum(len(labels) for labels in spec.grids().values())
    _fake_runs(results, "sgdol-fashion-mnist", {"SGDOL M=alpha=10": [0.85] * n}, extra={"SGDOL M=alpha=10": {"lr": 0.14}},
               seeds=spec.judging_seeds())
    dry = run_repro("reproduce", "sgdol-fashion-mnist", "--results", results, "--dry-run", timeout=600)
    assert dry.returncode == 0, dry.stderr
    assert (f"{grid_cells + n} runs known, {n} complete, {grid_cells} to run, then {3 * n} judging runs" in dry.stderr
            and "min on the reference 2-core CPU" in dry.stderr), dry.stderr
    assert dry.stderr.count("repro run convnet-fashion-mnist") == grid_cells and "--optimizer sgdol" not in dry.stderr
    done = run_repro("report", "--results", results, timeout=600)
    assert done.returncode == 0, done.stderr
    report = (results / "REPORT.md").read_text()
    assert "| P3-stepsize: " in report and "**reproduced**" in report and f"x86_64, 2 cores, no GPU ({n} runs)" in report
    depth = EXPERIMENTS.get("adamw-depth").scales["quick"].seeds  # a claim not run says what its plan costs
    assert f"| **not run** | no runs yet | {depth} planned |" in report
    assert "<table>" in (results / "REPORT.html").read_text()
    bad = run_repro("reproduce", "no-such-experiment", "--results", results)
    assert bad.returncode == 2 and bad.stderr.startswith("repro: error: unknown experiment 'no-such-experiment'")
    assert evidence(EXPERIMENTS.get("sgdol-fashion-mnist"), "quick", results, _setting_key)[0].n("SGDOL M=alpha=10") == n


@pytest.mark.slow
def test_reproduce_refuses_complete_runs_no_claim_counts(tmp_path):
    """Runs made before the claims' rule commit (the committed superseded LM runs, made at 0530b37) have the cells'
    identities: reproduce would skip those cells as done while the report drops the runs, so it refuses (one line,
    exit 2) and a dry run warns."""
    import shutil
    from pathlib import Path

    old = Path(__file__).resolve().parents[1] / "results" / "celgc-ptb" / "quick-superseded" / "lstm-ptb"
    shutil.copytree(old, tmp_path / "celgc-ptb" / "quick" / "lstm-ptb")
    done = run_repro("reproduce", "celgc-ptb", "--scale", "quick", "--results", tmp_path)
    assert done.returncode == 2, done.stderr
    assert "no claim counts it" in done.stderr and "quick-superseded" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    dry = run_repro("reproduce", "celgc-ptb", "--scale", "quick", "--results", tmp_path, "--dry-run")
    assert dry.returncode == 0 and "warning:" in dry.stderr


@pytest.mark.slow
def test_reproduce_leaves_a_new_plans_pilot_runs_alone(tmp_path):
    """DPSGD-tracks N = 8's second plan took the first plan's seeds 0-2 (runs older than its rule commit) as its
    pilot and judges seeds 3 on: those runs take no planned cell's place, so reproduce neither refuses nor warns."""
    import shutil
    from pathlib import Path

    import json

    from repro.experiments import dpsgd

    committed = Path(__file__).resolve().parents[1] / "results" / "dpsgd-fashion-mnist-n8" / "quick"
    pilot = [c.parent for c in committed.glob("*/*/config.json")
             if json.loads(c.read_text())["train"]["seed"] in dpsgd.PILOT_N8.seeds]
    assert len(pilot) == 6  # both arms on seeds 0-2
    for run in pilot:
        shutil.copytree(run, tmp_path / "dpsgd-fashion-mnist-n8" / "quick" / run.parent.name / run.name)
    dry = run_repro("reproduce", "dpsgd-fashion-mnist-n8", "--scale", "quick", "--results", tmp_path, "--dry-run")
    assert dry.returncode == 0 and "warning:" not in dry.stderr, dry.stderr
    assert "26 to run" in dry.stderr and "--seed 3 " in dry.stderr and "--seed 0 " not in dry.stderr
