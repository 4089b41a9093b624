"""Caching: what a re-run costs when nothing, the seed, or the prompt text changed.

The same default txt2img graph (a tiny SD1 checkpoint file, CheckpointLoaderSimple ... SaveImage)
runs through the HTTP API of a real `server.py` process (POST /prompt until `executing null` on the
websocket) and through the runner in this process (graph.runner.run_prompt with one executor kept
between runs, as a script that runs many workflows would). Each round changes the seed, re-runs
unchanged, changes the prompt text, re-runs unchanged; the nodes that ran are recorded too.

    python bench/bench_cache.py [--rounds N]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stats, log, pyplot, save_figure  # noqa: E402

CKPT = "tiny-sd1.safetensors"
KINDS = ("unchanged", "seed change", "prompt change")


def default_graph(*, seed: int = 1, text: str = "a red circle", negative: str = "blurry", steps: int = 10,
                  size: int = 256, batch: int = 1, ckpt: str = CKPT, save: bool = True) -> dict[str, Any]:
    """ComfyUI's default graph on a checkpoint file."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 8.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": ({"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bench"}} if save else
              {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}),
    }


def make_base(base: Path) -> Path:
    """A server base directory with the tiny SD1 checkpoint in models/checkpoints."""
    from nodes.models.tiny import write_tiny_checkpoint  # noqa: PLC0415

    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    if not (checkpoints / CKPT).exists():
        write_tiny_checkpoint(checkpoints, "sd1", name="tiny-sd1")
    return base


def sequence(rounds: int) -> list[tuple[str, dict[str, Any]]]:
    """(kind, prompt) pairs: per round a seed change, an unchanged re-run, a prompt change, an unchanged re-run."""
    out: list[tuple[str, dict[str, Any]]] = []
    text = "a red circle"
    for r in range(rounds):
        seed = 100 + r
        out.append(("seed change", default_graph(seed=seed, text=text, size=64, steps=20)))
        out.append(("unchanged", default_graph(seed=seed, text=text, size=64, steps=20)))
        text = f"a red circle, variation {r}"
        out.append(("prompt change", default_graph(seed=seed, text=text, size=64, steps=20)))
        out.append(("unchanged", default_graph(seed=seed, text=text, size=64, steps=20)))
    return out


@dataclass
class CacheFigures:
    path: str                               # "HTTP API" | "runner"
    first_run: float
    times: dict[str, Stats]
    executed: dict[str, list[str]]          # kind -> nodes that ran (the last time)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "first_run": self.first_run, "times": {k: s.to_json() for k, s in self.times.items()},
                "executed": self.executed}


def _figures(path: str, first: float, results: list[tuple[str, float, list[str]]]) -> CacheFigures:
    times = {k: Stats.of([t for kind, t, _ in results if kind == k]) for k in KINDS}
    executed = {kind: sorted(nodes) for kind, _, nodes in results}
    return CacheFigures(path, first, times, executed)


async def _http(server_url: str, rounds: int) -> CacheFigures:
    import aiohttp  # noqa: PLC0415

    from bench.server_proc import Client  # noqa: PLC0415

    async with aiohttp.ClientSession() as session:
        client = await Client(session, server_url).connect()
        try:
            first = await client.run_prompt(default_graph(seed=99, size=64, steps=20))
            results = []
            for kind, prompt in sequence(rounds):
                timing = await client.run_prompt(prompt)
                results.append((kind, timing.latency, timing.executed))
                log(f"  HTTP {kind}: {timing.latency * 1e3:.1f} ms, ran {sorted(timing.executed)}")
        finally:
            await client.close()
    return _figures("HTTP API", first.latency, results)


def http_on(url: str, rounds: int) -> CacheFigures:
    """The caching sequence through the HTTP API of a running server."""
    return asyncio.run(_http(url, rounds))


def through_http(base: Path, rounds: int) -> CacheFigures:
    from bench.server_proc import ServerProcess  # noqa: PLC0415

    with ServerProcess(base) as server:
        return http_on(server.url, rounds)


def through_runner(base: Path, rounds: int) -> CacheFigures:
    """graph.runner.run_prompt in this process, one Executor (LRU cache) kept across runs."""
    import time  # noqa: PLC0415

    import nodes  # noqa: PLC0415
    from graph.cache import OutputCache  # noqa: PLC0415
    from graph.executor import Executor  # noqa: PLC0415
    from graph.registry import NodeRegistry  # noqa: PLC0415
    from graph.runner import run_prompt  # noqa: PLC0415
    from nodes import runtime as rt  # noqa: PLC0415
    from nodes.folders import FolderPaths  # noqa: PLC0415

    rt.configure(FolderPaths(base, create_dirs=True))
    registry = nodes.register_builtin_nodes(NodeRegistry())
    executor = Executor(registry, OutputCache("lru"))

    def run(prompt: dict[str, Any]) -> tuple[float, list[str]]:
        t0 = time.perf_counter()
        result, _ = run_prompt(prompt, registry, progress=False, executor=executor)
        elapsed = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"runner: prompt failed: {result.error}")
        return elapsed, list(result.executed)

    first, _ = run(default_graph(seed=99, size=64, steps=20))
    results = []
    for kind, prompt in sequence(rounds):
        elapsed, ran = run(prompt)
        results.append((kind, elapsed, ran))
        log(f"  runner {kind}: {elapsed * 1e3:.1f} ms, ran {sorted(ran)}")
    return _figures("runner", first, results)


def markdown(figures: list[CacheFigures]) -> list[str]:
    lines = ["| path | first run (model load) | unchanged re-run | seed change | prompt change | nodes run on "
             "seed change | nodes run on prompt change |", "|---|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.path} | {f.first_run * 1e3:.0f} ms | **{f.times['unchanged'].fmt(1e3, 1, ' ms')}** | "
                     f"{f.times['seed change'].fmt(1e3, 0, ' ms')} | {f.times['prompt change'].fmt(1e3, 0, ' ms')} | "
                     f"{', '.join(f.executed.get('seed change', []))} | "
                     f"{', '.join(f.executed.get('prompt change', []))} |")
    return lines


def plot(figures: list[CacheFigures], path: Path) -> Path:
    """Grouped bars (log scale): re-run time by kind of change, HTTP API and runner."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(figures)
    for i, f in enumerate(figures):
        xs = [k + i * width for k in range(len(KINDS))]
        med = [f.times[k].median * 1e3 for k in KINDS]
        err = [[f.times[k].median * 1e3 - f.times[k].low * 1e3 for k in KINDS],
               [f.times[k].high * 1e3 - f.times[k].median * 1e3 for k in KINDS]]
        bars = ax.bar(xs, med, width, yerr=err, capsize=3, label=f.path)
        ax.bar_label(bars, labels=[f"{m:.0f} ms" if m >= 10 else f"{m:.1f} ms" for m in med], fontsize=7)
    ax.axhline(50, color="r", ls="--", lw=0.8, label="50 ms")
    ax.set_xticks([k + width * (len(figures) - 1) / 2 for k in range(len(KINDS))], list(KINDS))
    ax.set_yscale("log")
    ax.set_ylabel("ms until the result (median, range)")
    ax.set_title("Re-running the default graph (tiny SD1 checkpoint, 64 px, 20 steps)", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = make_base(Path(tempfile.mkdtemp(prefix="diffloom-bench-cache-")))
    figures = [through_http(base, args.rounds), through_runner(base, args.rounds)]
    print("\n".join(markdown(figures)))


if __name__ == "__main__":
    main()
