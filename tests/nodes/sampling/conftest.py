"""Fixtures for the sampling tests; makes the helper module beside this file importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The repository root, in case pytest was started without it on sys.path.
sys.path.insert(1, str(Path(__file__).resolve().parents[3]))

from sampling_analytic import SD15_SCHEDULER_CONFIG  # noqa: E402

from nodes.sampling import DiscreteModelSampling  # noqa: E402


@pytest.fixture(scope="session")
def ms() -> DiscreteModelSampling:
    """Model sampling of an SD1.x-style epsilon model."""
    return DiscreteModelSampling.from_config(SD15_SCHEDULER_CONFIG)
