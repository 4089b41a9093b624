"""Fixtures of the benchmark smoke tests."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def bench_runtime(tmp_path: Path) -> Iterator[Any]:
    """A process runtime on scratch folders (no model files needed), the previous one restored afterwards."""
    from bench.models import configure_runtime
    from nodes import folders
    from nodes import runtime as rt

    previous, previous_folders = rt._runtime, folders._default
    yield configure_runtime(tmp_path / "base")
    rt._runtime = previous
    folders._default = previous_folders
