"""What every benchmark shares: interleaved A/B timing, robust statistics, the machine's description.

Absolute times on a shared 2-core machine are noise; what survives is a ratio measured side by side.
`interleave` runs the variants in alternating order (A B, then B A, ...) so that load from other
processes falls on both, and `Stats` reports medians with their spread instead of means.
"""
from __future__ import annotations

import os

# Spinning OpenMP threads make small models ~30x slower on shared cores; nothing may load from a hub.
# These must be set before torch is imported anywhere in the process.
os.environ.setdefault("GOMP_SPINCOUNT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Stats:
    """Median and spread of repeated measurements (any unit)."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("Stats.of: no values to summarise")
        return cls(tuple(float(v) for v in values))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) by linear interpolation between sorted values."""
        ordered = sorted(self.values)
        if len(ordered) == 1:
            return ordered[0]
        pos = q * (len(ordered) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    def fmt(self, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
        """`median (low-high, n=N)` in `unit` after multiplying by `scale`."""
        m, lo, hi = self.median * scale, self.low * scale, self.high * scale
        return f"{m:.{digits}f}{unit} ({lo:.{digits}f}-{hi:.{digits}f}, n={self.n})"

    def to_json(self) -> dict[str, Any]:
        return {"median": self.median, "low": self.low, "high": self.high, "n": self.n, "values": list(self.values)}


@dataclass
class Sample:
    """One timed call: wall seconds, CPU seconds of this process, and whatever the call returned."""

    wall: float
    cpu: float
    value: Any = None


def synchronize() -> None:
    """Wait for queued GPU work (CUDA and MPS run kernels asynchronously); nothing to do on a CPU."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        torch.mps.synchronize()


def timed(fn: Callable[[], Any]) -> Sample:
    """Run fn once and time it (wall clock and this process's CPU time), GPU work included."""
    synchronize()
    c0, t0 = time.process_time(), time.perf_counter()
    value = fn()
    synchronize()
    return Sample(time.perf_counter() - t0, time.process_time() - c0, value)


@dataclass
class Interleaved:
    """Samples of several variants taken in alternating order; `rounds[i][name]` is round i of `name`."""

    names: tuple[str, ...]
    rounds: list[dict[str, Sample]] = field(default_factory=list)

    def samples(self, name: str) -> list[Sample]:
        return [r[name] for r in self.rounds]

    def wall(self, name: str) -> Stats:
        return Stats.of([s.wall for s in self.samples(name)])

    def cpu(self, name: str) -> Stats:
        return Stats.of([s.cpu for s in self.samples(name)])

    def ratio(self, a: str, b: str, measure: str = "wall") -> Stats:
        """Per-round ratios a/b: each pair ran back to back, so shared load mostly cancels."""
        return Stats.of([getattr(r[a], measure) / getattr(r[b], measure) for r in self.rounds])


Variant = Callable[[], Any] | tuple[Callable[[], Any], Callable[[], Any]]


def _split(variant: Variant) -> tuple[Callable[[], Any] | None, Callable[[], Any]]:
    return variant if isinstance(variant, tuple) else (None, variant)


def interleave(variants: Mapping[str, Variant], rounds: int, *, warmup: int = 1,
               progress: Callable[[str], None] | None = None) -> Interleaved:
    """Time each variant `rounds` times, alternating the order every round (A B, B A, A B, ...).

    A variant is a callable, or a pair (setup, callable) whose setup runs untimed before every call
    (switching a setting). Every variant runs `warmup` untimed times first (allocator, lazy init,
    first-call caches).
    """
    names = tuple(variants)
    for _ in range(warmup):
        for name in names:
            setup, fn = _split(variants[name])
            if setup is not None:
                setup()
            fn()
    result = Interleaved(names)
    for i in range(rounds):
        order = names if i % 2 == 0 else tuple(reversed(names))
        row: dict[str, Sample] = {}
        for name in order:
            setup, fn = _split(variants[name])
            if setup is not None:
                setup()
            row[name] = timed(fn)
            if progress is not None:
                progress(f"  round {i + 1}/{rounds} {name}: {row[name].wall:.3f} s wall, {row[name].cpu:.3f} CPU-s")
        result.rounds.append(row)
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of values."""
    return Stats.of(values).quantile(q / 100.0)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default)."""
    import psutil  # noqa: PLC0415

    return int(psutil.Process(pid or os.getpid()).memory_info().rss)


def peak_rss_bytes() -> int:
    """The highest RSS this process has had (Linux reports ru_maxrss in KiB)."""
    import resource  # noqa: PLC0415

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Device, dtype, library versions and CPU facts, as the report prints them."""
    import diffusers  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    from nodes import device as devices  # noqa: PLC0415

    policy = devices.policy()
    flags = cpu_flags()
    info: dict[str, Any] = {
        **policy.describe(),
        "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "transformers": transformers.__version__, "cpu": cpu_model(), "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "avx512": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_bf16" in flags,
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", ""), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        "load_average": round(load_average(), 2),
    }
    if policy.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(policy.device)
    return info


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: the bench writes PNG files and never opens a window."""
    import matplotlib  # noqa: PLC0415 - only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay a figure out, write it as a PNG beside the report and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def log(message: str) -> None:
    """Progress on stderr, so that a long `make bench` shows where it is."""
    print(message, file=sys.stderr, flush=True)
