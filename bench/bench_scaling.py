"""Scaling: time per sampling step against resolution and batch size (cfg 5: cond and uncond batched).

Each point is one call of diffloom's denoiser (nodes.guidance) on the model, which is a whole step
but for the sampler's update (well under a millisecond). Wall time and CPU time are both kept: on a
shared machine the CPU time shows the work, the wall time what a user would wait.

    python bench/bench_scaling.py [--full] [--repeats N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stats, log, pyplot, save_figure, timed  # noqa: E402

RESOLUTIONS = (128, 256, 512)
BATCHES = (1, 2, 4)


@dataclass
class Point:
    size: int
    batch: int
    wall: Stats
    cpu: Stats

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "batch": self.batch, "wall": self.wall.to_json(), "cpu": self.cpu.to_json()}


@dataclass
class ScalingFigures:
    label: str
    resolution: list[Point]
    batch: list[Point]
    skipped: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "resolution": [p.to_json() for p in self.resolution],
                "batch": [p.to_json() for p in self.batch], "skipped": self.skipped}


def measure(wrapped: Any, label: str, *, repeats: int = 1, resolutions: tuple[int, ...] = RESOLUTIONS,
            batches: tuple[int, ...] = BATCHES, batch_size: int = 256,
            allow: Callable[[float], bool] | None = None) -> ScalingFigures:
    """Time per step at each resolution (batch 1) and each batch size (at `batch_size` px).

    `allow(estimated_seconds)` may refuse a point (a time budget); refused points are listed as skipped.
    Estimates scale the 256 px batch-1 time by the number of latent pixels.
    """
    from bench.bench_cpu import StepWorkload  # noqa: PLC0415

    base_seconds: float | None = None
    skipped: list[str] = []

    def point(size: int, batch: int) -> Point | None:
        nonlocal base_seconds
        if base_seconds is not None and allow is not None:
            estimate = base_seconds * (size * size * batch) / (256 * 256) * repeats
            if not allow(estimate):
                skipped.append(f"{size} px batch {batch} (estimated {estimate:.0f} s)")
                return None
        work = StepWorkload(wrapped, label, size=size, batch=batch)
        step = work.step()
        samples = [timed(step) for _ in range(repeats)]
        p = Point(size, batch, Stats.of([s.wall for s in samples]), Stats.of([s.cpu for s in samples]))
        if size == 256 and batch == 1:
            base_seconds = p.wall.median
        log(f"  {label} {size} px batch {batch}: {p.wall.median:.3f} s wall, {p.cpu.median:.3f} CPU-s")
        return p

    ordered = sorted(set(resolutions) | {batch_size}, key=lambda s: (s != 256, s))
    by_size = {s: point(s, 1) for s in ordered}
    res = [by_size[s] for s in sorted(resolutions) if by_size.get(s) is not None]
    bat = [by_size[batch_size] if b == 1 else point(batch_size, b) for b in batches]
    return ScalingFigures(label, res, [p for p in bat if p is not None], skipped)  # type: ignore[misc]


def markdown(figures: list[ScalingFigures]) -> list[str]:
    lines = ["| model | resolution | batch | UNet batch (cfg) | step, wall | step, CPU time | wall per image |",
             "|---|---|---|---|---|---|---|"]
    for f in figures:
        seen = set()
        for p in f.resolution + f.batch:
            if (p.size, p.batch) in seen:
                continue
            seen.add((p.size, p.batch))
            lines.append(f"| {f.label} | {p.size} px | {p.batch} | {2 * p.batch} | {p.wall.fmt(unit=' s')} | "
                         f"{p.cpu.fmt(unit=' CPU-s')} | {p.wall.median / p.batch:.3f} s |")
        for s in f.skipped:
            lines.append(f"| {f.label} | skipped for the time budget: {s} | | | | | |")
    return lines


def plot(figures: list[ScalingFigures], path: Path) -> Path:
    """Left: seconds per step against megapixels; right: seconds per image-step against batch size."""
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for f in figures:
        if f.resolution:
            mp = [p.size * p.size / 1e6 for p in f.resolution]
            left.plot(mp, [p.wall.median for p in f.resolution], "o-", label=f"{f.label}, wall")
            left.plot(mp, [p.cpu.median / 2 for p in f.resolution], "s--", label=f"{f.label}, CPU time / 2 cores")
            for p, x in zip(f.resolution, mp):
                left.annotate(f"{p.size}px", (x, p.wall.median), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if f.batch:
            bs = [p.batch for p in f.batch]
            right.plot(bs, [p.wall.median / p.batch for p in f.batch], "o-", label=f"{f.label}, wall per image")
            right.plot(bs, [p.cpu.median / 2 / p.batch for p in f.batch], "s--",
                       label=f"{f.label}, CPU time / 2 per image")
    left.set_xlabel("megapixels per image")
    left.set_ylabel("seconds per step (batch 1, cfg 5)")
    left.set_title("Time per step against resolution", fontsize=10)
    left.set_ylim(bottom=0)
    left.legend(fontsize=7)
    right.set_xlabel("batch size")
    right.set_ylabel("seconds per step per image")
    right.set_title("Time per step per image against batch size", fontsize=10)
    right.set_ylim(bottom=0)
    right.set_xticks(sorted({p.batch for f in figures for p in f.batch}) or [1])
    right.legend(fontsize=7)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full-size SD1.5 (slow) instead of the tiny model")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from bench.models import configure_runtime, full_checkpoint, load_full, tiny_model  # noqa: PLC0415

    configure_runtime(Path(tempfile.mkdtemp(prefix="diffloom-bench-")))
    if args.full:
        figures = [measure(load_full(full_checkpoint()), "SD1.5 size", repeats=args.repeats)]
    else:
        figures = [measure(tiny_model(), "tiny SD1", repeats=args.repeats)]
    print("\n".join(markdown(figures)))


if __name__ == "__main__":
    main()
