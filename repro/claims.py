"""Claims of the papers (`repro list`), each with where the paper states it and the rule that judges it, fixed here
before any run of its experiment (repro/experiments/). A rule sees only the runs' numbers and returns a verdict:
"reproduced", "not reproduced" or "inconclusive" (at this scale), with the numbers it used.

The two statistical rules are Welch's two-sample comparison at the 5 % level, written out so each verdict can be
checked by hand (mean, std and n of both sides are reported):

- ``better(a, b)``: the 95 % confidence interval of mean(a) - mean(b) (Welch's t, Welch-Satterthwaite degrees of
  freedom rounded down) lies entirely on the claimed side -> reproduced; entirely on the other side -> not
  reproduced; else inconclusive. This is Welch's t-test at p < 0.05, two-sided.
- ``within(a, b, tolerance)`` (equivalence): the interval lies inside [-tolerance, +tolerance] -> reproduced;
  entirely outside -> not reproduced; else inconclusive. ``at_least(a, b, margin)`` (non-inferiority): the interval
  lies above -margin -> reproduced; entirely below -> not reproduced.

Fewer than ``MIN_SEEDS`` seeds on either side is always inconclusive.

What more seeds would buy: every comparison a rule makes is noted (``recording``); for an inconclusive one,
``seeds_to_decide`` gives the seeds per arm at which the same means and stds would put the interval wholly on one
side of the rule's nearest boundary (0 for ``better``, ±tolerance for ``within``, -margin for ``at_least``).

Each claim names the commit that fixed its rule and setting (``Claim.rule_commit``): `repro report` counts only runs
made from that commit or a descendant of it (git), and lists the others as not counted. A commit cannot contain its
own hash, so the hash is written in the commit after the one that fixed the rule; the report checks it is an
ancestor of the checked-out code.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence

MIN_SEEDS = 3
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NOT_RUN = "not run"  # no run of the experiment at that scale yet: no evidence either way
# the claim cannot be judged with this machine whatever the seeds (wall-clock speed-ups of workers sharing 2 cores)
NOT_DECIDABLE = "not decidable here"

# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom; above 30, 2.042 (df 30) is used, which
# errs towards "inconclusive".
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass
class Verdict:
    outcome: str  # reproduced / not reproduced / inconclusive
    measured: str  # the numbers, e.g. "AdamW 31.2 ± 0.4 (n=3) vs Adam-l2 33.0 ± 0.6 (n=3)"
    detail: str = ""  # the interval or the reason for "inconclusive"
    # seeds per arm at which the observed effect would decide the rule (None: not computed / cannot be estimated);
    # the report fills it from the comparisons the rule made when the judge leaves it None
    seeds_to_decide: int | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str  # the id of a paper in repro.recipes.PAPERS (`repro list`)
    statement: str
    where: str  # where the paper states it
    rule: str  # the rule in words (the code is `judge`)
    judge: Callable[["Evidence"], Verdict] = field(compare=False, repr=False)
    # the commit that fixed this rule and its setting ("" = not recorded yet: every run counts, and the report says
    # so); runs from other commits than it and its descendants are not counted
    rule_commit: str = ""


class Evidence:
    """What a claim's rule sees: for each setting label of the experiment, its runs' metrics (one DataFrame per
    seed, complete runs only) and the scale they ran at."""

    def __init__(self, runs_by_label: dict[str, list], scale: str = "quick"):
        self.runs = runs_by_label
        self.scale = scale

    def n(self, label: str) -> int:
        return len(self.runs.get(label, []))

    def final(self, label: str, column: str) -> list[float]:
        """The last logged value of ``column`` of each seed's run."""
        values = []
        for run in self.runs.get(label, []):
            series = run.metrics[column].dropna() if column in run.metrics else []
            if len(series):
                values.append(float(series.iloc[-1]))
        return values

    def last_mean(self, label: str, column: str, k: int) -> list[float]:
        """The mean of the last ``k`` logged values of ``column`` of each seed's run (fewer when fewer logged)."""
        return [sum(values[-k:]) / len(values[-k:]) for values in self.column(label, column) if values]

    def column(self, label: str, column: str) -> list[list[float]]:
        """Every logged value of ``column``, per seed."""
        return [run.metrics[column].dropna().astype(float).tolist() for run in self.runs.get(label, [])
                if column in run.metrics]


# -- the statistics ------------------------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def describe(name: str, values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    mean, std, n = mean_std(values)
    if n == 0:
        return f"{name}: no complete run"
    spread = f" ± {std * scale:.{digits}g}" if n > 1 else ""
    return f"{name} {mean * scale:.{digits + 1}g}{spread} (n={n})"


def welch_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """95 % confidence interval (low, high) of mean(a) - mean(b) and the degrees of freedom (Welch)."""
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    va, vb = sa * sa / na, sb * sb / nb
    delta = ma - mb
    se2 = va + vb
    if se2 == 0:
        return delta, delta, math.inf
    df = se2 * se2 / ((va * va / (na - 1) if va else 0.0) + (vb * vb / (nb - 1) if vb else 0.0))
    half = _t975(df) * math.sqrt(se2)
    return delta - half, delta + half, df


def paired_interval(diffs: Sequence[float]) -> tuple[float, float]:
    """95 % confidence interval (low, high) of the mean of per-seed differences (t, n - 1 degrees of freedom)."""
    mean, std, n = mean_std(diffs)
    half = _t975(n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


class Unit(NamedTuple):
    """How an interval is printed: values times ``scale``, then ``name`` (accuracy as a fraction -> points)."""
    scale: float = 1.0
    name: str = ""


POINTS = Unit(100.0, " points")  # accuracies are fractions in the logs and percent in the report


@dataclass(frozen=True)
class Comparison:
    """One interval a rule decided on: the samples, the region edges the interval must not straddle (in the
    oriented difference), the orientation, and its outcome."""
    a: tuple[float, ...]
    b: tuple[float, ...]
    boundaries: tuple[float, ...]
    sign: float  # +1: the difference a - b; -1: b - a (lower is better)
    outcome: str


_RECORDED: ContextVar[list[Comparison] | None] = ContextVar("recorded_comparisons", default=None)


@contextmanager
def recording() -> Iterator[list[Comparison]]:
    """Collect every comparison ``better`` / ``within`` / ``at_least`` makes inside the block."""
    found: list[Comparison] = []
    token = _RECORDED.set(found)
    try:
        yield found
    finally:
        _RECORDED.reset(token)


def _note(a, b, boundaries, sign, outcome) -> None:
    found = _RECORDED.get()
    if found is not None:
        found.append(Comparison(tuple(a), tuple(b), tuple(boundaries), sign, outcome))


def _t975(df: float) -> float:
    return _T975[min(max(int(df), 1), len(_T975)) - 1]


def _welch_df(std_a: float, std_b: float, n: int) -> float:
    """Welch's degrees of freedom for two arms of n seeds each with these stds."""
    var = std_a * std_a + std_b * std_b
    return var * var / ((std_a ** 4 + std_b ** 4) / (n - 1)) if var else math.inf


MAX_SEEDS = 10_000  # beyond this "seeds to decide" is reported as never (the effect sits on a boundary)


def seeds_to_decide(comparison: Comparison) -> int | None:
    """Seeds per arm (both arms alike) at which the comparison's interval would lie on one side of every boundary,
    were the means and stds what they are now; None when a side has fewer than 2 seeds (no std) or it never would
    (the effect sits on a boundary) within ``MAX_SEEDS``."""
    ma, sa, na = mean_std(comparison.a)
    mb, sb, nb = mean_std(comparison.b)
    if min(na, nb) < 2:
        return None
    delta = comparison.sign * (ma - mb)
    gap = min(abs(delta - edge) for edge in comparison.boundaries)
    var = sa * sa + sb * sb
    if var == 0:
        return MIN_SEEDS if gap > 0 else None
    if gap == 0:
        return None
    n = max(MIN_SEEDS, na, nb)  # never fewer than either arm has already
    while n <= MAX_SEEDS:
        df = _welch_df(sa, sb, n)
        if _t975(df) * math.sqrt(var / n) < gap:
            return n
        n += 1 if n < 100 else max(1, n // 50)
    return None


def verdict_seeds(outcome: str, comparisons: Sequence[Comparison]) -> int | None:
    """Seeds per arm at which a rule that combines ``comparisons`` (all reproduced -> reproduced, any not reproduced
    -> not reproduced) would decide, the observed effects unchanged: the fewest seeds that decide some part as not
    reproduced, else the most any part needs to be reproduced. A part that already refutes decides at the seeds it
    has (the claim is then inconclusive only because its rule waits for the planned seeds). None when decided, or when
    it cannot be estimated."""
    if outcome != INCONCLUSIVE or not comparisons:
        return None
    against, needed = [], []
    for c in comparisons:
        if c.outcome == NOT_REPRODUCED:
            against.append(max(MIN_SEEDS, len(c.a), len(c.b)))
            continue
        if c.outcome == REPRODUCED:
            continue
        n = seeds_to_decide(c)
        if n is None:
            needed.append(None)
            continue
        ma, mb = mean_std(c.a)[0], mean_std(c.b)[0]
        if _would_refute(c, c.sign * (ma - mb)):
            against.append(n)
        needed.append(n)
    if against:
        return min(against)
    return None if any(n is None for n in needed) else max(needed, default=None)


# -- seeds planned from a pilot (before the judged runs) ------------------------------------------------------------

POWER_80 = 0.842  # one-sided 80 % normal quantile (power 80 %)


def seeds_for_margin(std: float, margin: float, power_quantile: float = POWER_80) -> int:
    """Judging seeds per arm for the non-inferiority rule to come out "reproduced" with 80 % power when the true
    difference is 0, both arms having seed std ``std``: the smallest n >= MIN_SEEDS with
    (t_0.975(df) + z_0.8) * std * sqrt(2 / n) <= margin, df = 2n - 2 (Welch's df for equal stds)."""
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"a seed std must be a finite number >= 0, got {std}")
    n = MIN_SEEDS
    while (_t975(2 * n - 2) + power_quantile) * std * math.sqrt(2 / n) > margin:
        n += 1
    return n


def seeds_for_paired(std: float, distance: float, power_quantile: float = POWER_80) -> int:
    """Seeds for a paired interval to clear ``distance`` from its true mean: the smallest n >= MIN_SEEDS with
    (t_0.975(n - 1) + z) std / sqrt(n) <= distance (z = 0: at the observed effect, no power margin)."""
    n = MIN_SEEDS
    while (_t975(n - 1) + power_quantile) * std / math.sqrt(n) > distance:
        n += 1
    return n


def seeds_for_effect(std_a: float, std_b: float, effect: float, power_quantile: float = POWER_80) -> int:
    """Judging seeds per arm for a 'better' rule (Welch 95 % CI of the difference above 0) to come out
    "reproduced" with 80 % power when the true difference is ``effect`` > 0 and the arms' seed stds are ``std_a``
    and ``std_b``: the smallest n >= MIN_SEEDS with (t_0.975(df) + z_0.8) * sqrt((std_a² + std_b²) / n) <= effect,
    df Welch's for n seeds each."""
    for value in (std_a, std_b):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a seed std must be a finite number >= 0, got {value}")
    if not effect > 0:
        raise ValueError(f"the effect to detect must be > 0, got {effect}")
    var = std_a * std_a + std_b * std_b
    if var == 0:
        return MIN_SEEDS
    n = MIN_SEEDS
    while n <= MAX_SEEDS:
        df = _welch_df(std_a, std_b, n)
        if (_t975(df) + power_quantile) * math.sqrt(var / n) <= effect:
            return n
        n += 1
    raise ValueError(f"no seed count up to {MAX_SEEDS} detects an effect of {effect} at stds {std_a}, {std_b}")


@dataclass(frozen=True)
class Pilot:
    """A pilot: one cell run on seeds no claim uses, before any judged run; its values, written in code, give the
    seed std from which the judging seeds are computed (``seeds``) and the sentence the experiment's `why` shows."""
    arm: str  # the cell that ran, e.g. "fault-free D-SGD"
    seeds: tuple[int, ...]
    values: tuple[float, ...] = ()  # the judged value of each seed's run; () until the pilot has run
    measure: str = ""  # what a value is, e.g. "final training loss"
    percent: bool = False  # values are fractions, shown in % with the std in points
    unit: str = ""  # otherwise the values' unit, e.g. " nats"
    where: str = ""  # the pilot's results folder

    @property
    def std(self) -> float | None:
        return mean_std(self.values)[1] if len(self.values) >= 2 else None

    def seeds_for(self, margin: float) -> int:
        """Judging seeds per arm at the pilot's std (``MIN_SEEDS`` until it has run)."""
        return MIN_SEEDS if self.std is None else seeds_for_margin(self.std, margin)

    def text(self, seeds: int, target: str) -> str:
        """The pilot and the computation: ``target`` is what the power is for, e.g. "'reproduced' with margin 1"."""
        ran = f"{self.arm}, seeds {', '.join(map(str, self.seeds))}"
        if self.std is None:
            return f"Seeds: {seeds} until the pilot ({ran}) has measured the seed std; no judged run before that."
        if self.percent:
            shown = ", ".join(f"{v * 100:.2f}" for v in self.values) + " %"
            spread = f"{self.std * 100:.2f} points"
        else:
            shown = ", ".join(f"{v:.4f}" for v in self.values) + self.unit
            spread = f"{self.std:.4f}{self.unit}"
        where = f", {self.where}" if self.where else ""
        return (f"Pilot ({ran}{where}): {self.measure} {shown}, std {spread}; n = {seeds} judging seeds per arm "
                f"gives 80 % power for {target} at a true difference of 0 (seeds_for_margin), both arms at the "
                f"pilot's std.")


def short_of_plan(counts: dict[str, int], planned: int | dict[str, int],
                  what: str = "planned judging seeds") -> str | None:
    """None once every arm has its planned seeds, else "A 2, B 3 of the 5 planned judging seeds complete"; with a
    plan per arm (``planned`` a dict), the arms short of theirs: "A 2 of 4, B 3 of 6"."""
    if isinstance(planned, dict):
        short = [f"{label} {n} of {planned[label]}" for label, n in counts.items() if n < planned[label]]
        return ", ".join(short) or None
    if min(counts.values(), default=0) >= planned:
        return None
    return ", ".join(f"{label} {n}" for label, n in counts.items()) + f" of the {planned} {what} complete"


def _would_refute(c: Comparison, delta: float) -> bool:
    """Whether a narrow interval around ``delta`` falls on the rule's 'not reproduced' side. The three rules'
    regions: better (one boundary 0): below 0; at_least (one boundary -margin): below it; within (two boundaries
    -tol, +tol): outside them."""
    if len(c.boundaries) == 2:
        low, high = sorted(c.boundaries)
        return delta < low or delta > high
    return delta < c.boundaries[0]


def _interval(kind: str, low: float, high: float, df: float, unit: Unit) -> str:
    return f"{kind} 95% CI [{low * unit.scale:.4g}, {high * unit.scale:.4g}]{unit.name} (Welch, df {df:.1f})"


def _enough(a, b) -> str | None:
    if min(len(a), len(b)) < MIN_SEEDS:
        return f"fewer than {MIN_SEEDS} seeds (n = {len(a)} and {len(b)})"
    return None


def better(a: Sequence[float], b: Sequence[float], higher_is_better: bool, unit: Unit = Unit()) -> tuple[str, str]:
    """Is a better than b? (outcome, interval text)"""
    short = _enough(a, b)
    if short:
        _note(a, b, (0.0,), 1.0 if higher_is_better else -1.0, INCONCLUSIVE)
        return INCONCLUSIVE, short
    low, high, df = welch_interval(a, b)
    if not higher_is_better:
        low, high = -high, -low  # the interval of the improvement
    text = _interval("improvement", low, high, df, unit)
    outcome = REPRODUCED if low > 0 else NOT_REPRODUCED if high < 0 else INCONCLUSIVE
    _note(a, b, (0.0,), 1.0 if higher_is_better else -1.0, outcome)
    return outcome, text


def within(a: Sequence[float], b: Sequence[float], tolerance: float, unit: Unit = Unit()) -> tuple[str, str]:
    """Is |mean(a) - mean(b)| within ``tolerance``? (outcome, interval text)"""
    short = _enough(a, b)
    if short:
        _note(a, b, (-tolerance, tolerance), 1.0, INCONCLUSIVE)
        return INCONCLUSIVE, short
    low, high, df = welch_interval(a, b)
    text = _interval("difference", low, high, df, unit) + f", tolerance ±{tolerance * unit.scale:.4g}{unit.name}"
    outcome = against_tolerance(low, high, tolerance)
    _note(a, b, (-tolerance, tolerance), 1.0, outcome)
    return outcome, text


def against_tolerance(low: float, high: float, tolerance: float) -> str:
    """An interval inside ±tolerance -> reproduced ("the same"), entirely outside -> not reproduced, else
    inconclusive."""
    if -tolerance <= low and high <= tolerance:
        return REPRODUCED
    if high < -tolerance or low > tolerance:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def at_least(a: Sequence[float], b: Sequence[float], margin: float, higher_is_better: bool,
             unit: Unit = Unit()) -> tuple[str, str]:
    """Is a no worse than b by more than ``margin``? (outcome, interval text)"""
    sign = 1.0 if higher_is_better else -1.0
    short = _enough(a, b)
    if short:
        _note(a, b, (-margin,), sign, INCONCLUSIVE)
        return INCONCLUSIVE, short
    low, high, df = welch_interval(a, b)
    if not higher_is_better:
        low, high = -high, -low
    text = _interval("advantage", low, high, df, unit) + f", margin {margin * unit.scale:.4g}{unit.name}"
    outcome = REPRODUCED if low >= -margin else NOT_REPRODUCED if high < -margin else INCONCLUSIVE
    _note(a, b, (-margin,), sign, outcome)
    return outcome, text


def combine(outcomes: Sequence[str]) -> str:
    """All parts reproduced -> reproduced; any part not reproduced -> not reproduced; else inconclusive."""
    if outcomes and all(o == REPRODUCED for o in outcomes):
        return REPRODUCED
    if any(o == NOT_REPRODUCED for o in outcomes):
        return NOT_REPRODUCED
    return INCONCLUSIVE
