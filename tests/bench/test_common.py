"""Interleaved timing and robust statistics."""
from __future__ import annotations

import pytest

from bench.common import Stats, interleave, percentile


def test_stats_give_median_range_and_quantiles() -> None:
    s = Stats.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert s.quantile(0.5) == pytest.approx(2.5)
    assert percentile([1, 2, 3, 4, 5], 90) == pytest.approx(4.6)
    assert s.fmt(digits=1) == "2.5 (1.0-10.0, n=4)"
    with pytest.raises(ValueError, match="no values"):
        Stats.of([])


def test_interleave_alternates_the_order_and_runs_setups_untimed() -> None:
    calls: list[str] = []
    runs = interleave({"a": lambda: calls.append("a"), "b": (lambda: calls.append("setup b"), lambda: calls.append("b"))},
                      rounds=3, warmup=1)
    assert calls == ["a", "setup b", "b",            # warm-up
                     "a", "setup b", "b",            # round 1: A B
                     "setup b", "b", "a",            # round 2: B A
                     "a", "setup b", "b"]            # round 3: A B
    assert runs.wall("a").n == 3 and runs.ratio("a", "b").n == 3
