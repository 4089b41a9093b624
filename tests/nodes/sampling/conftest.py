"""Fixtures for the sampling tests."""

from __future__ import annotations

import pytest

from nodes.sampling import DiscreteModelSampling
from tests.nodes.sampling.sampling_analytic import SD15_SCHEDULER_CONFIG


@pytest.fixture(scope="session")
def ms() -> DiscreteModelSampling:
    """Model sampling of an SD1.x-style epsilon model."""
    return DiscreteModelSampling.from_config(SD15_SCHEDULER_CONFIG)
