"""MONNA -- MoNNA against D-SGD under faulty workers, against NNA without momentum, and against the robust baselines
(Farhadkhani et al., ICML 2023; the authors' LPD-EPFL/robust-collaborative-learning, reproduce.py's MNIST block).

Design (fixed here before the runs it judges):

- The setting is the authors' MNIST one scaled to one core of a 2-core machine (recipe monna-mnist-quick,
  repro/recipes/monna.py): 5 workers (5 processes) of which the last 1 is faulty and f = 1 declared (theirs: 26 and
  5), 200 of their 600 steps of batch 25, lr 0.75 / (1 + steps / 50), beta 0.99, l2 1e-4, Dirichlet alpha = 1.
- Judged value: worker 0's test accuracy (the authors' score), the mean of the last 2 evaluations (steps 150 and
  200); a diverged run counts as 0. The honest ranks' average model is shown beside it.
- Tolerance: 2 points of test accuracy (MNIST's error at this scale is ~2-3 %), for MoNNA-robust and
  MoNNA-vs-baselines; MoNNA-momentum is a plain 'better' (95 % CI above 0), judged under a second plan
  (monna-momentum-mnist: the first plan's runs of its arms are the pilot, the judging seeds fresh).
- Seeds: a pilot (fault-free D-SGD on seeds 900-902, never judged) measures the seed std; the judging seeds per arm
  are the smallest n that decides the non-inferiority rule at that std with 80 % power (``seeds_for_margin``),
  written here (PILOT) before the first judging run. No setting is tuned: there are no selection seeds.
"""
from __future__ import annotations

import math
from typing import Callable

from repro import claims
from repro.claims import Claim, Evidence, Verdict
from repro.experiments import Experiment, Scale, Setting, of_seeds, register

# The commit that fixed these rules and settings (written in the commit after it: a commit cannot name itself).
RULE_COMMIT = "e1d3d102b9310bf0df82f277de31258add3f9bb1"
TOLERANCE = 0.02  # 2 points of test accuracy
LAST = 2  # evaluations averaged: steps 150 and 200
PILOT_SEEDS = (900, 901, 902)
# The pilot's judged values (fault-free D-SGD, seeds 900-902, results/monna-pilot/quick), filled in before any
# judging run; () until then.
PILOT = claims.Pilot("fault-free D-SGD", PILOT_SEEDS, (0.943, 0.947, 0.95625),
                     measure="worker 0's judged test accuracy", percent=True, where="results/monna-pilot/quick")
SEEDS = PILOT.seeds_for(TOLERANCE)

# MoNNA-momentum, second plan (monna-momentum-mnist). The first (monna-mnist, 4 seeds sized on the fault-free pilot)
# came out inconclusive: NNA without momentum is bimodal here (it trains, or diverges or sticks at chance), its seed
# spread 20-90 times the pilot's. So monna-mnist's seeds 0-3 of the four arms are this plan's pilot, never judged,
# and the judging seeds are fresh (from 4), as many as give 80 % power at the pilot's effect and stds
# (claims.seeds_for_effect) for the attack that needs more; every arm runs that many.
MOMENTUM_ATTACKS = ("ALIE", "FOE")
MOMENTUM_PILOT = {  # worker 0's judged test accuracy, results/monna-mnist/quick, seeds 0-3
    "MoNNA ALIE": (0.94925, 0.90625, 0.9195, 0.93775),
    "NNA beta=0 ALIE": (0.8545, 0.0, 0.5745, 0.9025),  # seed 1 diverged: counted as 0
    "MoNNA FOE": (0.94225, 0.9495, 0.9515, 0.951),
    "NNA beta=0 FOE": (0.823, 0.1025, 0.09, 0.725),
}
MOMENTUM_PILOT_SEEDS = (0, 1, 2, 3)


def _momentum_seeds(attack: str) -> int:
    (ma, sa, _), (mb, sb, _) = (claims.mean_std(MOMENTUM_PILOT[f"{arm} {attack}"]) for arm in ("MoNNA", "NNA beta=0"))
    return claims.seeds_for_effect(sa, sb, ma - mb)


MOMENTUM_SEEDS = max(_momentum_seeds(attack) for attack in MOMENTUM_ATTACKS)
MOMENTUM_FIRST_SEED = max(MOMENTUM_PILOT_SEEDS) + 1
RULE_COMMIT_MOMENTUM = "ed148a2024d4ddc9c6d6c222dac8a455937d35e5"  # the second plan's own commit, written in the commit after it

QUICK = ("simple-conv-mnist", "--preset", "quick")  # recipe monna-mnist-quick: NNA, f = 1, beta 0.99, 5 workers
# The authors' attacks (reproduce.py: attacks = ["little", "empire", "signflipping", "labelflipping"]), each by the
# last rank. ALIE's factor in Baruch et al.'s closed form, FOE's Xie et al.'s epsilon = 0.1: the authors' line
# search (search=auto) made a step 5x dearer in a probe (50 steps: 152 s against 31 s of training on this machine).
ATTACKS = {
    "ALIE": ("--byzantine", "alie"),
    "FOE": ("--byzantine", "foe"),
    "sign-flip": ("--byzantine", "sign-flip"),
    "label-flip": ("--byzantine", "label-flip"),
}
FAULTY = ("--byzantine-opt", "count=1")
NO_MOMENTUM = ("--optimizer-opt", "beta=0")  # reproduce.py: momentums = [0, 0.99] (momentum = dampening)
FAULT_FREE = "D-SGD fault-free"  # reproduce.py's "_dsgd" run: averaging, momentum 0.99, no faulty worker
MEAN = ("--sync-opt", "aggregator=mean")


def monna(attack: str) -> str:
    return f"MoNNA {attack}"


def averaging(attack: str) -> str:
    return f"D-SGD {attack}"


def without_momentum(attack: str) -> str:
    return f"NNA beta=0 {attack}"


def baseline(aggregator: str, momentum: bool, attack: str) -> str:
    return f"{aggregator}{'' if momentum else ' beta=0'} {attack}"


# -- the judged value ------------------------------------------------------------------------------------------------

def last_mean(column: str, last: int, failed: float) -> Callable[[object], float]:
    """A run's judged value: the mean of the last ``last`` logged values of ``column``; ``failed`` for a diverged
    run (its last row has no evaluation): a failure, never a missing value."""
    def value(run) -> float:
        metrics = run.metrics
        if "status" in metrics and str(metrics["status"].iloc[-1]) == "diverged":
            return failed
        series = metrics[column].dropna().astype(float).tolist() if column in metrics else []
        return sum(series[-last:]) / len(series[-last:]) if series else math.nan
    return value


WORKER0 = last_mean("worker0_test_acc", LAST, failed=0.0)
AVERAGE = last_mean("test_acc", LAST, failed=0.0)


def values(ev: Evidence, label: str, value=WORKER0) -> list[float]:
    """The judged values of ``label``'s judging runs (pilot seeds left out)."""
    found = (value(run) for run in ev.runs.get(label, []) if run.seed not in PILOT_SEEDS)
    return [v for v in found if not math.isnan(v)]


def short_of_plan(ev: Evidence, labels, planned: int | dict[str, int]) -> str | None:
    return claims.short_of_plan({label: len(values(ev, label)) for label in labels}, planned)


def show(ev: Evidence, label: str) -> str:
    """Worker 0's judged accuracy, and the honest ranks' average model's beside it."""
    average = claims.mean_std(values(ev, label, AVERAGE))[0]
    return claims.describe(f"{label} %", values(ev, label), 100) + f" (honest average {average * 100:.2f} %)"


def falls_short(a: list[float], b: list[float], tolerance: float) -> tuple[str, str]:
    """Is a worse than b by more than ``tolerance`` (higher is better)? The Welch 95 % CI of mean(b) - tolerance -
    mean(a) above 0 -> reproduced, below -> not reproduced (``claims.better`` on b shifted down by the tolerance)."""
    outcome, interval = claims.better([v - tolerance for v in b], a, higher_is_better=True, unit=claims.POINTS)
    return outcome, f"shortfall beyond the tolerance: {interval}"


# -- the rules -------------------------------------------------------------------------------------------------------

def _verdict(parts: list[tuple[str, str]], measured: list[str], short: str | None) -> Verdict:
    outcome = claims.INCONCLUSIVE if short else claims.combine([o for o, _ in parts])
    detail = "; ".join(([f"not judged before the planned seeds: {short}"] if short else [])
                       + [text for _, text in parts])
    return Verdict(outcome, "; ".join(measured), detail)


def judge_robust(planned: int, seeds=None):
    """``seeds``: the judging seeds (the plan's); other seeds' runs (a pilot's, or from `--seeds 60`) never count."""
    def judge(ev: Evidence) -> Verdict:
        if seeds is not None:
            ev = of_seeds(ev, seeds)
        clean = values(ev, FAULT_FREE)
        labels = [FAULT_FREE] + [f(a) for a in ATTACKS for f in (monna, averaging)]
        parts, measured = [], [show(ev, FAULT_FREE)]
        for attack in ATTACKS:
            robust, plain = values(ev, monna(attack)), values(ev, averaging(attack))
            outcome, interval = claims.at_least(robust, clean, TOLERANCE, higher_is_better=True, unit=claims.POINTS)
            parts.append((outcome, f"{monna(attack)} vs fault-free: {outcome} ({interval})"))
            outcome, interval = falls_short(plain, clean, TOLERANCE)
            parts.append((outcome, f"{averaging(attack)} falls short: {outcome} ({interval})"))
            measured += [show(ev, monna(attack)), show(ev, averaging(attack))]
        return _verdict(parts, measured, short_of_plan(ev, labels, planned))
    return judge


def judge_momentum(planned: int, attacks=("ALIE", "FOE"), seeds=None):
    """``seeds``: the judging seeds (the plan's); other seeds' runs (its pilot's) never count."""
    def judge(ev: Evidence) -> Verdict:
        if seeds is not None:
            ev = of_seeds(ev, seeds)
        labels = [f(a) for a in attacks for f in (monna, without_momentum)]
        parts, measured = [], []
        for attack in attacks:
            outcome, interval = claims.better(values(ev, monna(attack)), values(ev, without_momentum(attack)),
                                              higher_is_better=True, unit=claims.POINTS)
            parts.append((outcome, f"{attack}: {outcome} ({interval})"))
            measured += [show(ev, monna(attack)), show(ev, without_momentum(attack))]
        return _verdict(parts, measured, short_of_plan(ev, labels, planned))
    return judge


BASELINES = ("trimmed-mean", "geometric-median")

# MoNNA-vs-baselines, second plan. The first (4 seeds, sized on the fault-free pilot) came out inconclusive: attacked
# baselines spread far wider than fault-free D-SGD (runs that train or stick at chance). Its runs, seeds 0-3 of all
# 20 arms (made under rule e1d3d10), are this plan's pilot and are never judged. Each of the 16 comparisons gets the
# seeds that give 80 % power for the outcome its pilot points to (claims.seeds_for_effect on the distance of the
# pilot's mean difference from the -2-point margin, with the two arms' pilot stds); each arm runs the largest need
# among its comparisons, on fresh seeds from 4.
BASELINES_PILOT_SEEDS = (0, 1, 2, 3)
BASELINES_PILOT = {  # worker 0's judged test accuracy, results/monna-baselines-mnist/quick, seeds 0-3
    "MoNNA ALIE": (0.9495, 0.90375, 0.91975, 0.939),
    "trimmed-mean ALIE": (0.92675, 0.93275, 0.8855, 0.9375),
    "trimmed-mean beta=0 ALIE": (0.85275, 0.0, 0.0, 0.0),  # 0: diverged
    "geometric-median ALIE": (0.93975, 0.887, 0.937, 0.92475),
    "geometric-median beta=0 ALIE": (0.109, 0.65675, 0.101, 0.1045),
    "MoNNA FOE": (0.94225, 0.95025, 0.95125, 0.9515),
    "trimmed-mean FOE": (0.9305, 0.852, 0.89325, 0.94),
    "trimmed-mean beta=0 FOE": (0.416, 0.59725, 0.62575, 0.689),
    "geometric-median FOE": (0.9215, 0.92075, 0.84925, 0.944),
    "geometric-median beta=0 FOE": (0.68225, 0.70525, 0.764, 0.1045),
    "MoNNA sign-flip": (0.94225, 0.95025, 0.95125, 0.9515),
    "trimmed-mean sign-flip": (0.9375, 0.8655, 0.81775, 0.94575),
    "trimmed-mean beta=0 sign-flip": (0.7245, 0.1025, 0.59775, 0.1095),
    "geometric-median sign-flip": (0.921, 0.921, 0.85325, 0.94325),
    "geometric-median beta=0 sign-flip": (0.7035, 0.664, 0.60775, 0.1045),
    "MoNNA label-flip": (0.9535, 0.95025, 0.95325, 0.95275),
    "trimmed-mean label-flip": (0.9045, 0.85475, 0.837, 0.91875),
    "trimmed-mean beta=0 label-flip": (0.1045, 0.83975, 0.101, 0.1135),
    "geometric-median label-flip": (0.946, 0.9305, 0.948, 0.94825),
    "geometric-median beta=0 label-flip": (0.0, 0.93875, 0.93325, 0.90725),
}


def comparison_seeds(attack: str, other: str, pilot: dict[str, tuple[float, ...]] = BASELINES_PILOT) -> int:
    """Judging seeds per arm for MoNNA ``attack`` against the arm ``other``, from ``pilot``'s values of both."""
    (ours, s_ours, _), (theirs, s_theirs, _) = (claims.mean_std(pilot[label])
                                                for label in (monna(attack), other))
    return claims.seeds_for_effect(s_ours, s_theirs, abs(ours - theirs + TOLERANCE))


def _baseline_arm_seeds() -> dict[str, int]:
    seeds = {}
    for attack in ATTACKS:
        seeds[monna(attack)] = 0
        for aggregator in BASELINES:
            for momentum in (True, False):
                label = baseline(aggregator, momentum, attack)
                seeds[label] = comparison_seeds(attack, label)
                seeds[monna(attack)] = max(seeds[monna(attack)], seeds[label])
    return seeds


SECOND_PLAN_SEEDS = _baseline_arm_seeds()  # each arm's judging seeds in the second plan, from 4
BASELINES_FIRST_SEED = max(BASELINES_PILOT_SEEDS) + 1
RULE_COMMIT_BASELINES = "16980d44399eb443a4c0689d54d87e21d2d86c45"  # the second plan's own commit

# MoNNA-vs-baselines, third plan, for the one part the second left undecided: vs trimmed mean without momentum under
# FOE (3 seeds planned from a pilot std of 11.7 points; the fresh seeds spread 18.5, and the Welch interval at 2
# degrees of freedom straddled the margin). The other 15 parts keep their second-plan verdicts. This part is judged
# again on seeds neither arm has run (each arm continues after its second-plan seeds), as many as give 80 % power at
# the second plan's effect and stds of the two arms; the second plan's runs of the part are now its pilot and never
# count for it. The claim combines the 15 second-plan parts with this one.
RERUN_ATTACK, RERUN_BASELINE = "FOE", "trimmed-mean beta=0 FOE"
RERUN_PILOT = {  # worker 0's judged test accuracy, results/monna-baselines-mnist/quick, the second plan's seeds
    "MoNNA FOE": (0.9485, 0.94825, 0.95625, 0.94725, 0.94775, 0.94925, 0.94825),  # seeds 4-10
    "trimmed-mean beta=0 FOE": (0.6795, 0.384, 0.7255),  # seeds 4-6
}

RERUN_SEEDS = comparison_seeds(RERUN_ATTACK, RERUN_BASELINE, RERUN_PILOT)
BASELINE_ARM_SEEDS = {label: n + (RERUN_SEEDS if label in RERUN_PILOT else 0) for label, n in SECOND_PLAN_SEEDS.items()}
RULE_COMMIT_BASELINES_RERUN = "bfe00288e33a0c8f7c65fbde057efba502de144f"  # the third plan's own commit


def part_seeds(label: str, rerun: bool) -> range:
    """The seeds of arm ``label`` that judge a comparison: its second-plan seeds, or for the re-run part the third
    plan's, which follow them."""
    first = BASELINES_FIRST_SEED + (SECOND_PLAN_SEEDS[label] if rerun else 0)
    return range(first, first + (RERUN_SEEDS if rerun else SECOND_PLAN_SEEDS[label]))


def _span(seeds: range) -> str:
    return f"{seeds[0]}-{seeds[-1]}"


def judge_baselines(planned: int | dict[str, int], seeds=None):
    """``planned``: judging seeds per arm (one number for all, or each arm's own); ``seeds``: the plan's judging
    seeds (other seeds' runs, its pilot's, never count). Each part compares its arms on their second-plan seeds
    (``part_seeds``), the re-run part on the third plan's."""
    def judge(ev: Evidence) -> Verdict:
        if seeds is not None:
            ev = of_seeds(ev, seeds)
        labels = [monna(a) for a in ATTACKS] + [baseline(g, m, a) for a in ATTACKS for g in BASELINES
                                                 for m in (True, False)]
        short = short_of_plan(ev, labels, planned)
        parts, measured = [], []
        for attack in ATTACKS:
            measured.append(show(ev, monna(attack)))
            for aggregator in BASELINES:
                for momentum in (True, False):
                    label = baseline(aggregator, momentum, attack)
                    rerun = (attack, label) == (RERUN_ATTACK, RERUN_BASELINE)
                    ours, theirs = (values(of_seeds(ev, part_seeds(x, rerun)), x) for x in (monna(attack), label))
                    outcome, interval = claims.at_least(ours, theirs, TOLERANCE, higher_is_better=True,
                                                        unit=claims.POINTS)
                    plan = (f", third plan: seeds {_span(part_seeds(monna(attack), True))} and "
                            f"{_span(part_seeds(label, True))}") if rerun else ""
                    parts.append((outcome, f"vs {label}: {outcome} ({interval}{plan})"))
                    measured.append(show(ev, label))
        return _verdict(parts, measured, short)
    return judge


# -- the settings ----------------------------------------------------------------------------------------------------

def monna_setting(attack: str) -> Setting:
    return Setting(monna(attack), (*QUICK, *ATTACKS[attack], *FAULTY))


def without_momentum_setting(attack: str) -> Setting:
    return Setting(without_momentum(attack), (*QUICK, *NO_MOMENTUM, *ATTACKS[attack], *FAULTY))


def robust_settings() -> tuple[Setting, ...]:
    out = [Setting(FAULT_FREE, (*QUICK, *MEAN, "--sync-opt", "f=0"))]
    for attack, flags in ATTACKS.items():
        out.append(monna_setting(attack))
        out.append(Setting(averaging(attack), (*QUICK, *MEAN, *flags, *FAULTY)))
    out += [without_momentum_setting(a) for a in MOMENTUM_ATTACKS]  # monna-momentum-mnist's pilot
    return tuple(out)


def momentum_settings() -> tuple[Setting, ...]:
    return tuple(f(attack) for attack in MOMENTUM_ATTACKS for f in (monna_setting, without_momentum_setting))


def baseline_settings() -> tuple[Setting, ...]:
    """Each arm with its judging seeds (BASELINE_ARM_SEEDS): the second plan's, and the third plan's after them for
    the two arms of the re-run part."""
    out = []
    for attack, flags in ATTACKS.items():
        out.append(Setting(monna(attack), monna_setting(attack).argv, seeds=BASELINE_ARM_SEEDS[monna(attack)]))
        for aggregator in BASELINES:  # reproduce.py: gars ["cva", "trmean", "rfa"], momentums [0, 0.99]
            for momentum in (True, False):
                label = baseline(aggregator, momentum, attack)
                out.append(Setting(label, (*QUICK, "--sync-opt", f"aggregator={aggregator}",
                                           *(() if momentum else NO_MOMENTUM), *flags, *FAULTY),
                                   seeds=BASELINE_ARM_SEEDS[label]))
    return tuple(out)


def _pilot_text() -> str:
    return (" " + PILOT.text(SEEDS, "'reproduced' with the 2-point tolerance") + " The faulty arms' spread may be "
            "larger than the fault-free pilot's: the report then says how many seeds would decide.")


SCALING = (
    "The authors' MNIST setting (reproduce.py) scaled to one of two shared CPU cores: 5 workers as 5 processes "
    "(theirs 26), the last one faulty and f = 1 declared (theirs 5: f / n 0.19, here 0.20), the authors' CNN "
    "(simples-conv), batch 25 per worker, lr 0.75 / (1 + steps / 50), beta = dampening 0.99 (MoNNA, and their "
    "D-SGD baseline), l2 1e-4, Dirichlet alpha = 1 over classes, for 200 of their 600 steps (a 50-step probe of a "
    "faulty arm took 31 s of training on the shared machine: 600 steps x 36 runs did not fit); 6,250 training "
    "images (each worker's Dirichlet share, 1,250 on average, seen ~4 times; theirs 60,000 over 21 honest workers) "
    "and a fixed 2,000 of the 10,000 test images, evaluated every 50 steps (theirs every 5). ALIE's factor is "
    "Baruch et al.'s closed form and FOE's Xie et al.'s epsilon = 0.1, not the authors' line search (5x the cost "
    "of a step here). Deviations (docs/decentralized.md): every worker receives all n models and NNA averages the "
    "n - f nearest (their simulation: n - 2f); the Dirichlet split is over all 5 ranks, the faulty one included. "
    "With 200 steps the momentum's EMA (dampening 0.99, buffer from 0) has warmed up to 1 - 0.99^200 = 87 %: the "
    "short run favours beta = 0 in MoNNA-momentum. Judged: worker 0's test accuracy (their score), mean of the "
    "evaluations at steps 150 and 200; tolerance 2 points. ~2.5 min a run on the loaded machine (estimate).")

ROBUST_SCALE = Scale(robust_settings(), seeds=SEEDS, minutes_per_run=2.5, why=SCALING + _pilot_text())
def _baselines_pilot_text() -> str:
    parts = []
    for attack in ATTACKS:
        for aggregator in BASELINES:
            for momentum in (True, False):
                label = baseline(aggregator, momentum, attack)
                (ours, s_ours, _), (theirs, s_theirs, _) = (claims.mean_std(BASELINES_PILOT[x])
                                                            for x in (monna(attack), label))
                parts.append(f"vs {label}: {(ours - theirs) * 100:+.2f} points (stds {s_ours * 100:.2f}, "
                             f"{s_theirs * 100:.2f}) -> {comparison_seeds(attack, label)}")
    arms = ", ".join(f"{label} {n}" for label, n in SECOND_PLAN_SEEDS.items())
    return ("Second plan for MoNNA-vs-baselines: the first (4 seeds per arm, sized on the fault-free pilot) came out "
            "inconclusive because the attacked baselines spread far more widely than fault-free D-SGD. Its runs, "
            "seeds 0-3 of all 20 arms, are now the pilot and are never judged. Per comparison, the pilot's MoNNA - "
            "baseline difference (worker 0's judged accuracy), the two arms' stds and the seeds per arm that give "
            "80 % power for the outcome the pilot points to (claims.seeds_for_effect on the distance of the "
            f"difference from the -2-point margin): {'; '.join(parts)}. Each arm runs the largest need among its "
            f"comparisons, on fresh seeds from {BASELINES_FIRST_SEED}: {arms} ({sum(SECOND_PLAN_SEEDS.values())} "
            "runs, not 20 x the largest). A Welch interval on a bimodal arm is approximate at these n; each effect "
            "is a 4-seed estimate." + _rerun_text())


def _rerun_text() -> str:
    (ours, s_ours, _), (theirs, s_theirs, _) = (claims.mean_std(RERUN_PILOT[label])
                                                for label in (monna(RERUN_ATTACK), RERUN_BASELINE))
    pilot_std = claims.mean_std(BASELINES_PILOT[RERUN_BASELINE])[1]
    return (f" Third plan, for the one part the second left undecided (vs {RERUN_BASELINE}: 3 seeds planned from a "
            f"pilot std of {pilot_std * 100:.2f} points, the fresh seeds spread {s_theirs * 100:.2f}): its "
            "second-plan runs are its "
            f"pilot (difference {(ours - theirs) * 100:+.2f} points, stds {s_ours * 100:.2f} and "
            f"{s_theirs * 100:.2f}) -> {RERUN_SEEDS} seeds per arm that neither has run: "
            f"{monna(RERUN_ATTACK)} {_span(part_seeds(monna(RERUN_ATTACK), True))}, {RERUN_BASELINE} "
            f"{_span(part_seeds(RERUN_BASELINE, True))} ({2 * RERUN_SEEDS} runs). The other 15 parts keep their "
            "second-plan seeds and verdicts.")


BASELINES_SCALE = Scale(baseline_settings(), seeds=max(BASELINE_ARM_SEEDS.values()), first_seed=BASELINES_FIRST_SEED,
                        minutes_per_run=1.5, why=(
    SCALING + " Baselines as in reproduce.py: coordinate trimmed mean and geometric median (their trmean and rfa), "
    "each with momentum 0.99 and without, under the same four attacks; the MoNNA arms are the same settings as "
    "monna-mnist's. ~80 s a run (the first plan's median). " + _baselines_pilot_text()))

register(Experiment(
    name="monna-mnist",
    paper="MONNA",
    summary="MoNNA against D-SGD (plain averaging) with and without a faulty worker under ALIE, FOE, sign flip and "
            "label flip on MNIST with Dirichlet alpha = 1 (the paper's MNIST figures, reproduce.py's MNIST block, "
            "scaled to 5 workers); its runs of NNA without momentum are monna-momentum-mnist's pilot",
    scales={"quick": ROBUST_SCALE},
    claims=(
        Claim("MoNNA-robust", "MONNA",
              "under ALIE, FOE, sign flip and label flip MoNNA's accuracy stays within a tolerance of fault-free "
              "D-SGD, and plain averaging with the faulty worker does not",
              "Farhadkhani et al. 2023, Sec. 6 (experiments), the MNIST accuracy figures",
              "judged value: worker 0's mean test accuracy at steps 150 and 200; for every attack, (a) MoNNA: Welch 95% "
              "CI of mean(MoNNA - fault-free D-SGD) above -2 points -> part reproduced, entirely below -> not; (b) "
              "D-SGD with the faulty worker: CI of mean(fault-free - 2 points - D-SGD with faults) above 0 -> part "
              "reproduced, entirely below -> not; all eight parts reproduced -> reproduced, any not -> not "
              "reproduced; no verdict before the planned judging seeds (>= 3, from the pilot) are complete",
              judge_robust(SEEDS, seeds=ROBUST_SCALE.judging_seeds()), rule_commit=RULE_COMMIT),
    ),
))


def _momentum_pilot_text() -> str:
    parts = []
    for attack in MOMENTUM_ATTACKS:
        shown = []
        for arm in ("MoNNA", "NNA beta=0"):
            mean, std, _ = claims.mean_std(MOMENTUM_PILOT[f"{arm} {attack}"])
            shown.append(f"{arm} {mean * 100:.2f} ± {std * 100:.2f} %")
        parts.append(f"{attack}: {' vs '.join(shown)} -> {_momentum_seeds(attack)} seeds")
    return ("Second plan for MoNNA-momentum: the first (monna-mnist, 4 seeds sized on the fault-free pilot) came out "
            "inconclusive because NNA without momentum is bimodal at this step size (it trains, or diverges or "
            "sticks at chance). monna-mnist's seeds 0-3 of these four arms are now the pilot and are never judged "
            f"(worker 0's judged accuracy; {'; '.join(parts)}: the seeds per arm that give 80 % power for "
            "'reproduced' at the pilot's effect and stds, claims.seeds_for_effect); every arm runs the larger, "
            f"{MOMENTUM_SEEDS}, on fresh seeds {MOMENTUM_FIRST_SEED}-{MOMENTUM_FIRST_SEED + MOMENTUM_SEEDS - 1}. "
            "A Welch interval on a bimodal arm is approximate at this n; the pilot's effect is a 4-seed estimate.")


MOMENTUM_SCALE = Scale(momentum_settings(), seeds=MOMENTUM_SEEDS, first_seed=MOMENTUM_FIRST_SEED,
                       minutes_per_run=2.0, why=SCALING + " " + _momentum_pilot_text())

register(Experiment(
    name="monna-momentum-mnist",
    paper="MONNA",
    summary="MoNNA against NNA without momentum (beta = 0) under ALIE and FOE: the paper's momentum ablation, "
            "judged on fresh seeds sized from monna-mnist's runs of the same arms",
    scales={"quick": MOMENTUM_SCALE},
    claims=(
        Claim("MoNNA-momentum", "MONNA", "MoNNA beats NNA without momentum under ALIE and FOE",
              "Farhadkhani et al. 2023, Sec. 6, the momentum ablation (reproduce.py: momentums [0, 0.99])",
              "for ALIE and for FOE: Welch 95% CI of mean worker-0 test accuracy (steps 150 and 200) MoNNA - NNA with "
              "beta = 0 above 0 -> reproduced, entirely below -> not; both reproduced -> reproduced; no verdict "
              f"before the {MOMENTUM_SEEDS} planned judging seeds (fresh, from seed {MOMENTUM_FIRST_SEED}; the "
              "pilot's seeds 0-3 never judged) are complete",
              judge_momentum(MOMENTUM_SEEDS, seeds=MOMENTUM_SCALE.judging_seeds()),
              rule_commit=RULE_COMMIT_MOMENTUM),
    ),
))

register(Experiment(
    name="monna-baselines-mnist",
    paper="MONNA",
    summary="MoNNA against coordinate trimmed mean and geometric median, each with and without momentum, under "
            "the four attacks (the paper's comparison with robust aggregators, reproduce.py's gars and momentums)",
    scales={"quick": BASELINES_SCALE},
    claims=(
        Claim("MoNNA-vs-baselines", "MONNA",
              "MoNNA is no less accurate than trimmed mean and geometric median, with or without momentum, under "
              "ALIE, FOE, sign flip and label flip",
              "Farhadkhani et al. 2023, Sec. 6, the comparison with robust aggregation rules",
              "for every attack and baseline: Welch 95% CI of mean worker-0 test accuracy (steps 150 and 200) MoNNA - "
              "baseline above -2 points -> part reproduced, entirely below -> not; all 16 parts reproduced -> "
              "reproduced, any not -> not reproduced; no verdict before every arm has its planned judging seeds "
              f"(each arm's own, fresh from seed {BASELINES_FIRST_SEED}; the pilot's seeds 0-3 never judged); the "
              f"part vs {RERUN_BASELINE}, undecided by the second plan, is judged on the third plan's seeds only "
              f"({monna(RERUN_ATTACK)} {_span(part_seeds(monna(RERUN_ATTACK), True))}, {RERUN_BASELINE} "
              f"{_span(part_seeds(RERUN_BASELINE, True))}; third plan's rule commit "
              f"{RULE_COMMIT_BASELINES_RERUN[:10] or 'not yet recorded'})",
              judge_baselines(BASELINE_ARM_SEEDS, seeds=BASELINES_SCALE.judging_seeds()),
              rule_commit=RULE_COMMIT_BASELINES),
    ),
))
