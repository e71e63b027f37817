"""CELGC's rules (issue 25: D4 the LM margin in perplexity terms, D5 "no worse at the end", D6 "faster" with a
quality condition, item 5 P1-parallel in iterations) and the report's new parts (seeds that would decide an
inconclusive claim; only runs from a claim's rule commit or a descendant count), on hand-made runs."""
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from repro import claims
from repro.claims import Claim, Evidence, Verdict
from repro.experiments import celgc
from repro.report import Judged, Lineage, counted_runs, judge_claim, write
from repro.results import Run

EVERY, I4, I16 = celgc.EVERY, "CELGC I=4", "CELGC I=16"


def _run(columns: dict, commit: str = "", name: str = "run") -> Run:
    return Run(Path(name), {"environment": {"git_commit": commit}}, pd.DataFrame(columns), True)


def _evidence(curves: dict[str, list[list[float]]], column: str, scale: str = "quick", **extra) -> Evidence:
    """One run per curve: ``column`` per evaluation (plus ``extra`` columns, same for every run)."""
    return Evidence({label: [_run({column: curve, **{k: v[:len(curve)] for k, v in extra.items()}}) for curve in seeds]
                     for label, seeds in curves.items()}, scale)


LM = celgc.judge_no_worse("val_loss", celgc.LM_MARGIN, higher_is_better=False, last=1, show=celgc._show_loss)
CIFAR = celgc.judge_no_worse("test_acc", celgc.CIFAR_MARGIN, higher_is_better=True, last=3, unit=claims.POINTS,
                             show=celgc._show_points)


def test_no_worse_at_the_end_counts_celgc_being_better_for_it_and_ignores_noisy_early_epochs():
    # D5: the old two-sided rule at every epoch called this "not reproduced" (CELGC far better; epoch 1 far apart)
    base = [[0.30, 0.60, 0.70, 0.71, 0.70], [0.35, 0.61, 0.70, 0.70, 0.71], [0.25, 0.60, 0.71, 0.70, 0.70]]
    better = [[0.10, 0.65, 0.76, 0.75, 0.76], [0.12, 0.66, 0.75, 0.76, 0.75], [0.11, 0.65, 0.75, 0.75, 0.76]]
    verdict = CIFAR(_evidence({EVERY: base, I4: better, I16: better}, "test_acc"))
    assert verdict.outcome == claims.REPRODUCED, verdict
    assert "] points (Welch" in verdict.detail and "margin 2 points" in verdict.detail  # CIFAR intervals in points
    assert "mean of the last 3 test_acc" in verdict.measured
    worse = [[v - 0.06 for v in run] for run in base]
    assert CIFAR(_evidence({EVERY: base, I4: better, I16: worse}, "test_acc")).outcome == claims.NOT_REPRODUCED


def test_the_lm_margin_is_three_percent_of_perplexity_not_of_the_loss():
    # D4: 0.1 nats behind is 10.5 % in perplexity: outside log(1.03); 3 % of a 5.2-nat loss (0.156) would have passed
    base = [[5.20], [5.21], [5.19]]
    behind = [[5.30], [5.31], [5.29]]
    close = [[5.205], [5.215], [5.195]]
    assert LM(_evidence({EVERY: base, I4: behind, I16: close}, "val_loss")).outcome == claims.NOT_REPRODUCED
    verdict = LM(_evidence({EVERY: base, I4: close, I16: close}, "val_loss"))
    assert verdict.outcome == claims.REPRODUCED, verdict
    assert "perplexity 18" in verdict.measured and f"margin {math.log(1.03):.4g}" in verdict.detail


def _timed(label_curves: dict[str, list[tuple[list[float], list[float]]]], scale: str) -> Evidence:
    return Evidence({label: [_run({"wall_seconds": t, "test_acc": acc}) for t, acc in seeds]
                     for label, seeds in label_curves.items()}, scale)


def test_faster_needs_both_the_same_steps_and_a_common_quality_target_and_one_box_cannot_decide():
    judge = celgc.judge_faster(EVERY, I16, "test_acc", higher_is_better=True)
    slow = [([10, 20, 30], [0.5, 0.6, 0.7 + d]) for d in (0.0, 0.005, 0.01)]
    fast = [([5, 10, 15], [0.55, 0.65, 0.72 + d]) for d in (0.0, 0.005, 0.01)]
    cluster = judge(_timed({EVERY: slow, I16: fast}, celgc.CLUSTER_SCALE))
    assert cluster.outcome == claims.REPRODUCED, cluster
    one_box = judge(_timed({EVERY: slow, I16: fast}, "quick"))
    assert one_box.outcome == claims.NOT_DECIDABLE and "not decidable on one 2-core machine" in one_box.detail
    # fewer seconds for the same steps, but it reaches the common target (0.5) far later: not reproduced
    sloppy = [([5, 10, 15], [0.2, 0.3, 0.5 + d]) for d in (0.0, 0.005, 0.01)]
    slow_good = [([10, 20, 30], [0.6, 0.7, 0.8 + d]) for d in (0.0, 0.005, 0.01)]
    verdict = judge(_timed({EVERY: slow_good, I16: sloppy}, celgc.CLUSTER_SCALE))
    assert verdict.outcome == claims.NOT_REPRODUCED, verdict
    assert "same steps: reproduced" in verdict.detail and "to the target: not reproduced" in verdict.detail


def _parallel(speedups: dict[int, float]) -> Evidence:
    """Runs whose training loss falls as 1 / (1 + iterations x speed-up / 100), 8 epochs of 100 / N iterations."""
    runs = {}
    for n, s in speedups.items():
        runs[f"N={n}"] = []
        for jitter in (0.98, 1.0, 1.02):
            its = [e * 400 / n for e in range(1, 9)]
            mids = celgc.mid_epoch_iterations(its)
            runs[f"N={n}"].append(_run({"iteration": its, "train_loss": [2.0 / (1 + m * s * jitter / 100) for m in mids]}))
    return Evidence(runs)


def test_parallel_speedup_is_judged_in_iterations_per_worker_against_half_the_ideal():
    judge = celgc.judge_parallel((1, 2, 4))
    linear = judge(_parallel({1: 1.0, 2: 2.0, 4: 4.0}))
    assert linear.outcome == claims.REPRODUCED, linear
    assert "speed-up 4.00x (ideal 4x)" in linear.measured and "not decidable on 2 cores" in linear.detail
    flat = judge(_parallel({1: 1.0, 2: 1.1, 4: 1.2}))
    assert flat.outcome == claims.NOT_REPRODUCED, flat
    # the target is a loss every run reaches: the worst final one
    assert celgc.first_reach([1, 2, 3], [3.0, 2.0, 1.0], 1.5, higher_is_better=False) == pytest.approx(2.5)
    assert math.isnan(celgc.first_reach([1, 2], [3.0, 2.0], 1.0, higher_is_better=False))


def test_seeds_to_decide_is_where_the_interval_clears_the_rules_nearest_boundary():
    a, b = [1.0, 2.0, 3.0], [1.5, 2.5, 3.5]  # difference -0.5, stds 1 and 1
    with claims.recording() as found:
        outcome, _ = claims.better(a, b, higher_is_better=False)
    assert outcome == claims.INCONCLUSIVE and len(found) == 1
    n = claims.seeds_to_decide(found[0])
    # n is the first count with t(df) sqrt(2 / n) < 0.5, df = 2 (n - 1) (equal stds)
    half = lambda k: claims._T975[min(2 * (k - 1), 30) - 1] * math.sqrt(2 / k)  # noqa: E731
    assert half(n) < 0.5 <= half(n - 1)
    assert claims.verdict_seeds(claims.INCONCLUSIVE, found) == n
    # a margin rule: the nearest boundary is -margin; an effect beyond it decides "not reproduced" first
    with claims.recording() as found:
        claims.at_least([1.0, 2.0, 3.0], [3.0, 4.0, 5.0], margin=1.0, higher_is_better=True)  # -2 vs margin 1
        claims.within([1.0, 2.0, 3.0], [1.1, 2.1, 3.1], tolerance=1.0)  # would be reproduced, with many seeds
    refute, confirm = (claims.seeds_to_decide(c) for c in found)
    assert refute < confirm and claims.verdict_seeds(claims.INCONCLUSIVE, found) == refute
    assert claims.verdict_seeds(claims.REPRODUCED, found) is None
    with claims.recording() as found:  # an effect exactly on the boundary never decides
        claims.better([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], higher_is_better=True)
    assert claims.seeds_to_decide(found[0]) is None


def test_a_part_that_already_refutes_decides_at_its_seeds_and_the_report_never_says_fewer_than_the_plan():
    with claims.recording() as found:  # part (a) lies wholly below its margin at 3 seeds; part (b) is undecided
        claims.at_least([1.0, 1.1, 1.2], [9.0, 9.1, 9.2], margin=1.0, higher_is_better=True)
        claims.better([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], higher_is_better=True)
    assert [c.outcome for c in found] == [claims.NOT_REPRODUCED, claims.INCONCLUSIVE]
    assert claims.verdict_seeds(claims.INCONCLUSIVE, found) == 3
    # a rule that waits for its planned seeds stays inconclusive: the report then names the plan, not 3
    waits = Claim("W", "P", "s", "w", "r", lambda ev: claims.Verdict(claims.INCONCLUSIVE, "m", "short of the plan")
                  if claims.at_least([1.0, 1.1, 1.2], [9.0, 9.1, 9.2], margin=1.0, higher_is_better=True) else None)
    assert judge_claim(waits, Evidence({}), planned=97).seeds_to_decide == 97
    assert judge_claim(waits, Evidence({})).seeds_to_decide == 3


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def history(tmp_path):
    """A repository with commits old -> rule -> new, and a side branch from old."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    commits = {}
    for name in ("old", "rule", "new"):
        (repo / "f").write_text(name)
        _git(repo, "add", "f")
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"the {name} commit")
        commits[name] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-b", "side", commits["old"])
    (repo / "f").write_text("side")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "side")
    commits["side"] = _git(repo, "rev-parse", "HEAD")
    (repo / "results").mkdir()
    return repo, commits


def test_only_runs_from_the_rule_commit_or_a_descendant_count(history):
    repo, commits = history
    lineage = Lineage(repo / "results")
    runs = {"a": [_run({"x": [1.0]}, commits["rule"], "at-rule"), _run({"x": [1.0]}, commits["new"] + "-dirty", "later"),
                  _run({"x": [1.0]}, commits["old"], "before"), _run({"x": [1.0]}, commits["side"], "side"),
                  _run({"x": [1.0]}, "", "unrecorded"), _run({"x": [1.0]}, "f" * 40, "unknown")]}
    claim = Claim("C", "P1", "s", "w", "r", lambda ev: Verdict(claims.REPRODUCED, str(ev.n("a"))),
                  rule_commit=commits["rule"][:10])
    kept, dropped, note = counted_runs(claim, Evidence(runs), lineage)
    assert [r.path.name for r in kept.runs["a"]] == ["at-rule", "later"]
    assert {p.name for p, _ in dropped} == {"before", "side", "unrecorded", "unknown"}
    assert "the rule commit" in note
    assert all("not the rule commit or a descendant" in why for p, why in dropped if p.name in ("before", "side"))
    unset = Claim("C", "P1", "s", "w", "r", claim.judge)
    assert counted_runs(unset, Evidence(runs), lineage)[0].n("a") == 6  # not recorded: every run counts
    missing = Claim("C", "P1", "s", "w", "r", claim.judge, rule_commit="0" * 40)
    kept, dropped, note = counted_runs(missing, Evidence(runs), lineage)
    assert kept.n("a") == 0 and len(dropped) == 6 and "cannot be checked" in note


def test_report_lists_rule_commits_not_counted_runs_and_seeds_to_decide(tmp_path):
    from repro.experiments import EXPERIMENTS

    claim = Claim("C", "P1", "s", "w", "r", lambda ev: claims.Verdict(*claims.better([1, 2, 3], [1.5, 2.5, 3.5], True)))
    verdict = judge_claim(claim, Evidence({}))
    assert verdict.outcome == claims.INCONCLUSIVE and verdict.seeds_to_decide and verdict.seeds_to_decide > 3
    experiment = EXPERIMENTS.get("celgc-workers")
    judged = [Judged(experiment, "quick", "C", "s", "w", "r", verdict, 3, "abcdef1234567", "2026-12-02 the rule",
                     [(tmp_path / "celgc-workers/quick/x/old-run", "made from 0123456789ab, not the rule commit or a "
                                                                  "descendant")], 15)]
    md = write(tmp_path, judged, [])[0].read_text()
    assert f"| {verdict.seeds_to_decide} | abcdef1234 |" in md
    assert "Rule commit: `abcdef123456` (2026-12-02 the rule)" in md
    assert "Not counted (1 runs of this plan's cells): `celgc-workers/quick/x/old-run` (made from 0123456789ab" in md
    assert "Not counted: 15 runs from before the rule commit on seeds this plan does not run" in md
    assert f"Seeds per arm to decide at the observed effect: {verdict.seeds_to_decide}." in md


def test_the_report_lists_stale_runs_of_the_plans_cells_and_counts_the_rest():
    from repro.report import in_plan

    runs = {"a": [_run({"x": [1.0]}, "", "seed0"), _run({"x": [1.0]}, "", "pilot")]}
    for run, seed in zip(runs["a"], (0, 900)):
        run.config["train"] = {"seed": seed}
    dropped = [(run.path, "made from an older commit") for run in runs["a"]]
    listed, others = in_plan(dropped, Evidence(runs), {("a", 0), ("a", 1)})
    assert [p.name for p, _ in listed] == ["seed0"] and others == 1
    assert in_plan(dropped, Evidence(runs), set()) == ([], 2)


def test_reproduce_sees_the_runs_a_rule_commit_would_not_count(history):
    """`repro reproduce` takes a cell whose run is complete as done; a run made before the claims' rule commit has
    that run's identity but no verdict counts it: uncounted_runs names it (once, for the first claim dropping it)."""
    from types import SimpleNamespace

    from repro.report import uncounted_runs

    repo, commits = history
    runs = {"a": [_run({"x": [1.0]}, commits["rule"], "at-rule"), _run({"x": [1.0]}, commits["old"], "before")]}
    judge = lambda ev: Verdict(claims.REPRODUCED, "")  # noqa: E731
    experiment = SimpleNamespace(claims=(Claim("C1", "P1", "s", "w", "r", judge, rule_commit=commits["rule"]),
                                         Claim("C2", "P1", "s", "w", "r", judge, rule_commit=commits["old"])))
    stale = uncounted_runs(experiment, Evidence(runs), repo / "results")
    assert [(p.name, "C1" in why) for p, why in stale] == [("before", True)]
    experiment.claims = experiment.claims[1:]
    assert uncounted_runs(experiment, Evidence(runs), repo / "results") == []


def test_celgc_claims_judge_only_the_plans_seeds():
    """Runs after a scale's planned seeds (e.g. from `repro reproduce --seeds 60`) never enter a verdict."""
    from types import SimpleNamespace

    from repro.experiments import EXPERIMENTS, celgc

    experiment = EXPERIMENTS.get("celgc-cifar10")
    rounds = next(c for c in experiment.claims if c.id == "P1-rounds-cifar")
    planned = experiment.scales["quick"].judging_seeds()

    def runs(count, seeds):
        return [SimpleNamespace(seed=s, metrics=pd.DataFrame({"comm_rounds": [count]})) for s in seeds]

    later = range(max(planned) + 1, 60)
    ev = Evidence({"every-step (naive parallel clipping)": runs(320, planned) + runs(320, later),
                   "CELGC I=4": runs(80, planned) + runs(320, later), "CELGC I=16": runs(20, planned)}, "quick")
    assert rounds.judge(ev).outcome == claims.REPRODUCED  # 4x and 16x on the planned seeds
    assert celgc.judge_rounds(ev).outcome == claims.NOT_REPRODUCED  # the bare rule counts every seed: I=4 is off
