"""`make bench`: run every benchmark, write bench/results.md, bench/results.json and the plots.

    python bench/run.py [--budget-minutes 18] [--only SECTION ...] [--skip-full] [--no-compile] [--out DIR]

Sections, cheapest first: executor, engine (tiny), cpu (tiny), cache, server, memory (prompts), workers,
torch.compile (tiny), then the full-size SD1.5 (random weights, a 4.3 GB checkpoint file written once into
$DIFFLOOM_BENCH_CACHE or the temp folder): engine, memory (models), scaling, cpu. The full-size
measurements take what is left of the time budget; whatever does not fit is listed as skipped.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.budget import Budget  # noqa: E402
from bench.common import BENCH_DIR, load_average, log, machine  # noqa: E402

SECTIONS = ("executor", "engine", "cpu", "cache", "server", "memory", "workers", "scaling")
FULL_STEPS = 2           # sampling steps per full-size engine run (each step is one batch-2 UNet call)
FULL_SIZE = 256


class Results:
    """What the run found, per section, plus the errors of sections that failed."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.objects: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.durations: dict[str, float] = {}

    def attempt(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one section; a failure is recorded for the report, never fatal."""
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - one broken section must not lose the others' figures
            self.errors[name] = traceback.format_exc()
            log(f"   {name} FAILED:\n{self.errors[name]}")
            value = None
        self.durations[name] = self.durations.get(name, 0.0) + time.perf_counter() - t0
        log(f"   {name}: {time.perf_counter() - t0:.1f} s")
        return value


def run(args: argparse.Namespace) -> tuple[Results, Budget]:
    from bench import bench_cache, bench_cpu, bench_engine, bench_memory, bench_scaling, bench_server  # noqa: PLC0415
    from bench.bench_executor import measure as measure_executor  # noqa: PLC0415
    from bench.models import configure_runtime, full_checkpoint, load_full, tiny_model  # noqa: PLC0415
    from bench.server_proc import ServerProcess  # noqa: PLC0415

    budget = Budget(args.budget_minutes * 60.0)
    res = Results()
    want = set(args.only or SECTIONS)
    scratch = Path(tempfile.mkdtemp(prefix="diffloom-bench-"))
    configure_runtime(scratch / "engine")
    res.data["machine"] = machine()
    res.data["machine"]["load_average_start"] = res.data["machine"].pop("load_average")

    if "executor" in want:
        res.data["executor"] = res.attempt("executor", lambda: measure_executor(1000, 5))
    tiny = tiny_model()
    if "engine" in want:
        fig = res.attempt("engine (tiny)", lambda: bench_engine.compare(
            tiny, "tiny", "tiny SD1", steps=10, size=64, rounds=args.tiny_rounds, decode=True))
        if fig is not None:
            res.objects.setdefault("engine", []).append(fig)
    if "cpu" in want:
        comps = res.attempt("cpu (tiny)", lambda: bench_cpu.run_comparisons(
            bench_cpu.StepWorkload(tiny, "tiny SD1", size=64, calls=5), rounds=args.tiny_rounds, warmup=1))
        res.objects["cpu"] = list(comps or [])
    base = bench_cache.make_base(scratch / "server")
    if "cache" in want or "server" in want:
        def serve() -> None:
            started = time.perf_counter()
            with ServerProcess(base) as server:
                res.data["server_start"] = {"to_listening_s": time.perf_counter() - started}
                if "cache" in want:
                    res.objects["cache"] = [res.attempt("cache (HTTP)", lambda: bench_cache.http_on(server.url, 3))]
                if "server" in want:
                    res.objects["server"] = res.attempt("server", lambda: bench_server.measure(server.url))
                warmed = re.search(r"warmed up in ([\d.]+) s", server.log())
                res.data["server_start"]["warm_up_s"] = float(warmed.group(1)) if warmed else None
        res.attempt("server process", serve)
        if "cache" in want:
            res.objects.setdefault("cache", []).append(
                res.attempt("cache (runner)", lambda: bench_cache.through_runner(base, 3)))
            res.objects["cache"] = [c for c in res.objects["cache"] if c is not None]
            configure_runtime(scratch / "engine")  # the runner pointed the runtime at its own folders
    if "memory" in want:
        res.objects["memory_prompts"] = res.attempt("memory (100 prompts)", lambda: bench_memory.prompts_rss(100))
    if "workers" in want:
        from bench import bench_workers  # noqa: PLC0415

        res.data["workers"] = res.attempt("workers", lambda: bench_workers.measure(prompts=12, steps=10, size=96))
    if "cpu" in want and args.compile:
        pair = res.attempt("torch.compile (tiny)", lambda: bench_cpu.compile_comparison(
            bench_cpu.StepWorkload(tiny, "tiny SD1", size=64, calls=10), rounds=args.tiny_rounds))
        if pair is not None:
            res.objects.setdefault("cpu", []).append(pair[0])
            res.data["compile_seconds"] = {"tiny SD1": pair[1]}

    if args.skip_full:
        return res, budget

    # ---- full-size SD1.5 ------------------------------------------------------------------------------
    full = res.attempt("full-size checkpoint", lambda: load_full(full_checkpoint()))
    if full is None:
        return res, budget
    if "engine" in want:
        fig = res.attempt("engine (full)", lambda: bench_engine.compare(
            full, "full", "SD1.5 size", steps=FULL_STEPS, size=FULL_SIZE, rounds=3, decode=False))
        if fig is not None:
            res.objects.setdefault("engine", []).append(fig)
    step_seconds = _full_step_seconds(res)
    if "memory" in want:
        def models() -> dict[str, Any]:
            files = [full_checkpoint(), full_checkpoint("sd15-random-seed0-copy.safetensors",
                                                        copy_of="sd15-random-seed0.safetensors")]
            return bench_memory.models_rss(files)
        if budget.allows(60.0, "memory with one and two full-size models"):
            res.objects["memory_models"] = res.attempt("memory (models)", models)
    if "scaling" in want and budget.allows(step_seconds * 2.5, "scaling (full size)"):
        res.objects["scaling"] = [res.attempt("scaling (full)", lambda: bench_scaling.measure(
            full, "SD1.5 size", allow=lambda est: budget.allows(est, "a scaling point")))]
        res.objects["scaling"] = [s for s in res.objects["scaling"] if s is not None]
    if "cpu" in want:
        work = bench_cpu.StepWorkload(full, "SD1.5 size", size=FULL_SIZE)
        comps = res.attempt("cpu (full)", lambda: bench_cpu.run_comparisons(
            work, rounds=2, warmup=0, titles=bench_cpu.ORDER[:-1], step_seconds=step_seconds,
            allow=lambda est, what: budget.allows(est, what)))
        res.objects.setdefault("cpu", []).extend(comps or [])
    return res, budget


def _full_step_seconds(res: Results) -> float:
    """Wall seconds of one full-size step as just measured (a conservative guess when unknown)."""
    for fig in res.objects.get("engine", []):
        if fig.label == "SD1.5 size":
            return fig.unet().high
    return 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=18.0,
                        help="wall-clock budget; full-size measurements that do not fit are skipped (default 18)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--skip-full", action="store_true", help="no full-size SD1.5 measurements")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave out torch.compile on the tiny model (its compile takes a minute or two)")
    parser.add_argument("--tiny-rounds", type=int, default=6, help="interleaved rounds for tiny-model comparisons")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.md, results.json and plots go")
    args = parser.parse_args()
    started = time.perf_counter()
    res, budget = run(args)
    from bench.report import write_report  # noqa: PLC0415

    res.data["machine"]["load_average_end"] = round(load_average(), 2)
    path = write_report(res, budget, args.out, time.perf_counter() - started, argv=sys.argv[1:])
    log(f"wrote {path} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
