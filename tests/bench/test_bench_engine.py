"""The benchmark modules import, and one tiny engine comparison runs end to end (a smoke test, not a timing)."""
from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import pytest

MODULES = ["bench.common", "bench.budget", "bench.models", "bench.server_proc", "bench.bench_engine", "bench.bench_cpu",
           "bench.bench_cache", "bench.bench_server", "bench.bench_memory", "bench.bench_scaling", "bench.report",
           "bench.run", "bench.bench_executor"]


@pytest.mark.parametrize("name", MODULES)
def test_bench_modules_import(name: str) -> None:
    assert importlib.import_module(name).__doc__


def test_a_tiny_engine_comparison_runs_and_plots(bench_runtime: Any, tmp_path: Path) -> None:
    from bench import bench_engine
    from bench.models import tiny_model

    fig = bench_engine.compare(tiny_model("smoke"), "smoke", "tiny SD1", steps=2, size=32, rounds=1, decode=False)
    # Same modules, seed and schedule: both engines compute the same latents.
    assert fig.parity_rel is not None and fig.parity_rel < 1e-4
    assert fig.unet_input_difference < 1e-5  # the UNet gets the same tensors from both engines
    assert len(fig.clocks["diffloom"]) == len(fig.clocks["diffusers"]) == 1
    for clock in ("wall", "cpu"):
        assert all(len(c.unet_calls) == 2 and len(c.step_ends) == 2 for cs in fig.clocks.values() for c in cs)
        assert fig.unet(clock).median > 0 and math.isfinite(fig.decomposed_ratio(clock))
    table = "\n".join(bench_engine.markdown([fig]))
    assert "tiny SD1" in table and "decomposed ratio" in table
    png = bench_engine.plot([fig], tmp_path / "engine.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
