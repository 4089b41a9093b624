"""The time budget of `make bench`."""
from __future__ import annotations

from bench.budget import Budget


def test_a_measurement_runs_only_while_it_fits() -> None:
    budget = Budget(100.0, reserve=10.0)
    assert budget.allows(50.0, "small")
    assert not budget.allows(95.0, "too big")
    assert budget.skipped and budget.skipped[0].startswith("too big")


def test_rounds_fill_what_is_left_within_bounds() -> None:
    budget = Budget(100.0, reserve=0.0)
    assert budget.rounds(10.0, wanted=3) == 3
    assert budget.rounds(40.0, wanted=5) == 2
    assert budget.rounds(500.0, wanted=5, minimum=1) == 1
