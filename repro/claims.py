"""Claims of the three papers, each with where the paper states it and the rule that judges it, fixed here before
any run of its experiment (repro/experiments/). A rule sees only the runs' numbers and returns a verdict:
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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

MIN_SEEDS = 3
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NOT_RUN = "not run"  # no run of the experiment at that scale yet: no evidence either way

# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom; above 30, 2.042 (df 30) is used, which
# errs towards "inconclusive".
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass
class Verdict:
    outcome: str  # reproduced / not reproduced / inconclusive
    measured: str  # the numbers, e.g. "AdamW 31.2 ± 0.4 (n=3) vs Adam-l2 33.0 ± 0.6 (n=3)"
    detail: str = ""  # the interval or the reason for "inconclusive"


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str  # P1, P2 or P3
    statement: str
    where: str  # where the paper states it
    rule: str  # the rule in words (the code is `judge`)
    judge: Callable[["Evidence"], Verdict] = field(compare=False, repr=False)


class Evidence:
    """What a claim's rule sees: for each setting label of the experiment, its runs' metrics (one DataFrame per
    seed, complete runs only)."""

    def __init__(self, runs_by_label: dict[str, list]):
        self.runs = runs_by_label

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
    t = _T975[min(max(int(df), 1), len(_T975)) - 1]
    half = t * math.sqrt(se2)
    return delta - half, delta + half, df


class Unit(NamedTuple):
    """How an interval is printed: values times ``scale``, then ``name`` (accuracy as a fraction -> points)."""
    scale: float = 1.0
    name: str = ""


POINTS = Unit(100.0, " points")  # accuracies are fractions in the logs and percent in the report


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
        return INCONCLUSIVE, short
    low, high, df = welch_interval(a, b)
    if not higher_is_better:
        low, high = -high, -low  # the interval of the improvement
    text = _interval("improvement", low, high, df, unit)
    if low > 0:
        return REPRODUCED, text
    if high < 0:
        return NOT_REPRODUCED, text
    return INCONCLUSIVE, text


def within(a: Sequence[float], b: Sequence[float], tolerance: float, unit: Unit = Unit()) -> tuple[str, str]:
    """Is |mean(a) - mean(b)| within ``tolerance``? (outcome, interval text)"""
    short = _enough(a, b)
    if short:
        return INCONCLUSIVE, short
    low, high, df = welch_interval(a, b)
    text = _interval("difference", low, high, df, unit) + f", tolerance ±{tolerance * unit.scale:.4g}{unit.name}"
    if -tolerance <= low and high <= tolerance:
        return REPRODUCED, text
    if high < -tolerance or low > tolerance:
        return NOT_REPRODUCED, text
    return INCONCLUSIVE, text


def at_least(a: Sequence[float], b: Sequence[float], margin: float, higher_is_better: bool,
             unit: Unit = Unit()) -> tuple[str, str]:
    """Is a no worse than b by more than ``margin``? (outcome, interval text)"""
    short = _enough(a, b)
    if short:
        return INCONCLUSIVE, short
    low, high, df = welch_interval(a, b)
    if not higher_is_better:
        low, high = -high, -low
    text = _interval("advantage", low, high, df, unit) + f", margin {margin * unit.scale:.4g}{unit.name}"
    if low >= -margin:
        return REPRODUCED, text
    if high < -margin:
        return NOT_REPRODUCED, text
    return INCONCLUSIVE, text


def combine(outcomes: Sequence[str]) -> str:
    """All parts reproduced -> reproduced; any part not reproduced -> not reproduced; else inconclusive."""
    if outcomes and all(o == REPRODUCED for o in outcomes):
        return REPRODUCED
    if any(o == NOT_REPRODUCED for o in outcomes):
        return NOT_REPRODUCED
    return INCONCLUSIVE
