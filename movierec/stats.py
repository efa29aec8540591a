"""Confidence intervals and a significance test for the online metrics (standard library only).

* rates (hit rate, share of personalised answers, click rate): the Wilson score interval, which
  stays inside [0, 1] and is honest for small counts and rates near 0 or 1, unlike the normal
  approximation;
* means (mean rating of recommended-then-rated movies): Student's t interval;
* two versions' hit rates: the two-proportion z-test with a pooled rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

#: Confidence level of every interval the online report shows.
CONFIDENCE = 0.95


def z_value(confidence: float = CONFIDENCE) -> float:
    """The two-sided normal quantile: 1.96 for 95 %."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


#: Up to this many degrees of freedom the t quantile is solved from the exact distribution; beyond
#: it the expansion is within 0.0005 of the tables.
_EXACT_T_DF = 30


def _t_central(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for j in range(2, df - 1, 2):  # 1 + 2/3 c^2 + 2*4/(3*5) c^4 + ...
                term *= j / (j + 1) * c2
                total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    total, term = 1.0, 1.0
    for j in range(1, df - 2, 2):  # 1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...
        term *= j / (j + 1) * c2
        total += term
    return math.sin(theta) * total


def t_value(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student t quantile with ``df`` degrees of freedom.

    Solved from the exact distribution up to 30 degrees of freedom; beyond, the Cornish-Fisher
    expansion around the normal quantile (Abramowitz & Stegun 26.7.5).
    """
    if df < 1:
        raise ValueError("t needs at least one degree of freedom")
    if df <= _EXACT_T_DF:
        low, high = 0.0, 1e4
        for _ in range(200):
            mid = (low + high) / 2
            low, high = (mid, high) if _t_central(mid, df) < confidence else (low, mid)
            if high - low < 1e-10:
                break
        return (low + high) / 2
    z = z_value(confidence)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (``None`` everywhere when there is no data)."""

    value: float | None
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """The rate ``successes / n`` with its Wilson score interval."""
    if n <= 0:
        return Estimate(None, None, None, 0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n, got {successes} of {n}")
    z = z_value(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly the rate; rounding would leave it a hair off it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(p, low, high, n)


def mean_interval(n: int, total: float, total_sq: float, confidence: float = CONFIDENCE) -> Estimate:
    """The mean of ``n`` values given their sum and sum of squares, with Student's t interval.

    One value has a mean but no interval.
    """
    if n <= 0:
        return Estimate(None, None, None, 0)
    mean = total / n
    if n == 1:
        return Estimate(mean, None, None, 1)
    variance = max(0.0, (total_sq - n * mean * mean) / (n - 1))  # rounding can dip below zero
    half = t_value(n - 1, confidence) * math.sqrt(variance / n)
    return Estimate(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class ZTest:
    """The two-proportion z-test of rate ``a`` against rate ``b``."""

    difference: float  # rate a - rate b
    z: float
    p_value: float
    significant: bool  # p below 1 - CONFIDENCE

    def to_dict(self) -> dict[str, float | bool]:
        return {"difference": self.difference, "z": self.z, "p_value": self.p_value, "significant": self.significant}


def two_proportion_z(successes_a: int, n_a: int, successes_b: int, n_b: int,
                     confidence: float = CONFIDENCE) -> ZTest | None:
    """Whether two rates differ (two-sided, pooled variance); None when either side has no data."""
    if n_a <= 0 or n_b <= 0:
        return None
    p_a, p_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:  # both rates 0 or both 1: no evidence of a difference
        return ZTest(p_a - p_b, 0.0, 1.0, False)
    z = (p_a - p_b) / se
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return ZTest(p_a - p_b, z, p_value, p_value < 1 - confidence)
