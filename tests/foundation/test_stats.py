"""The intervals and the test of the online report against published values and simulation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from movierec.stats import mean_interval, t_value, two_proportion_z, wilson


@pytest.mark.parametrize(("df", "table"), [(1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228),
                                          (30, 2.042), (120, 1.980)])
def test_t_quantiles_match_the_table(df: int, table: float) -> None:
    assert t_value(df) == pytest.approx(table, abs=0.002)


def test_wilson_matches_a_worked_example() -> None:
    # Newcombe (1998), example: 81 of 263 -> 0.2553 to 0.3662 at 95 %.
    estimate = wilson(81, 263)
    assert estimate.low == pytest.approx(0.2553, abs=1e-4) and estimate.high == pytest.approx(0.3662, abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(0, 10).high > 0.2  # no zero-width interval at 0
    assert wilson(0, 0).value is None


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_stays_in_the_unit_interval_and_holds_the_rate(case: tuple[int, int]) -> None:
    successes, n = case
    estimate = wilson(successes, n)
    assert 0.0 <= estimate.low <= estimate.value <= estimate.high <= 1.0


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    covered = 0
    for _ in range(2000):
        values = [rng.choice([1, 2, 3, 4, 5]) for _ in range(8)]
        est = mean_interval(len(values), sum(values), sum(v * v for v in values))
        covered += est.low <= 3.0 <= est.high
    assert 0.92 < covered / 2000 < 0.98
    assert mean_interval(1, 4.0, 16.0).low is None and mean_interval(0, 0, 0).value is None


def test_two_proportion_z_test() -> None:
    # 120/1000 against 90/1000: z = 2.19, p = 0.029 (pooled).
    test = two_proportion_z(120, 1000, 90, 1000)
    assert test is not None and test.z == pytest.approx(2.19, abs=0.01)
    assert test.p_value == pytest.approx(0.0285, abs=0.001) and test.significant
    assert not two_proportion_z(100, 1000, 95, 1000).significant
    assert two_proportion_z(0, 10, 0, 10).p_value == 1.0
    assert two_proportion_z(1, 0, 1, 10) is None


def test_z_test_false_positive_rate_is_about_five_percent() -> None:
    rng = random.Random(3)
    hits = 0
    for _ in range(2000):
        a = sum(rng.random() < 0.2 for _ in range(300))
        b = sum(rng.random() < 0.2 for _ in range(300))
        hits += two_proportion_z(a, 300, b, 300).significant  # type: ignore[union-attr]
    assert 0.03 < hits / 2000 < 0.07
    assert math.isclose(two_proportion_z(30, 100, 20, 100).difference, 0.1)  # type: ignore[union-attr]
