"""Memory: resident size with one and two full-size models loaded, and over 100 distinct prompts.

Models: a fresh process (`python -m bench.bench_memory probe FILE...`) loads full-size SD1.5
checkpoint files through the model manager, reads every weight once (so that memory-mapped
weights are really resident) and reports its RSS after each, and its peak.

Prompts: a real `server.py` with a small output-cache budget runs 100 distinct prompts (new seed and
new text each time, 128 px batch 2, so every prompt adds ~0.4 MB of images to the cache) on the tiny
model; the server's RSS and the cache's bytes are read after each one. Flat means: after the cache
has filled its budget, RSS stops growing.

    python bench/bench_memory.py prompts [--count 100]
    python bench/bench_memory.py probe FILE [FILE ...]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, log, peak_rss_bytes, pyplot, rss_bytes, save_figure  # noqa: E402

MB = 1 << 20
CACHE_BUDGET = "8MB"


# ---- models ---------------------------------------------------------------------------------------------

def probe(files: list[str]) -> dict[str, Any]:
    """Load each file in turn (kept loaded) and report RSS after each; run in a fresh process."""
    import torch  # noqa: PLC0415

    from nodes.models.manager import ModelManager  # noqa: PLC0415

    manager = ModelManager()
    out: dict[str, Any] = {"baseline_rss": rss_bytes(), "after": [], "load_seconds": []}
    held = []
    for path in files:
        t0 = time.perf_counter()
        wrapped = manager.load_checkpoint(path)
        with torch.inference_mode():
            for slot in wrapped.slots.values():
                module = slot.module
                for p in module.parameters():
                    p.sum()  # read every page of memory-mapped weights
        out["load_seconds"].append(time.perf_counter() - t0)
        held.append(wrapped)
        out["after"].append(rss_bytes())
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # models on a GPU: its memory too
            out.setdefault("gpu_allocated", []).append(int(torch.cuda.memory_allocated()))
    out["peak_rss"] = peak_rss_bytes()
    out["model_bytes"] = [sum(s.nbytes for s in w.slots.values()) for w in held]
    return out


def models_rss(files: list[Path]) -> dict[str, Any]:
    """`probe` in a fresh process."""
    cmd = [sys.executable, "-m", "bench.bench_memory", "probe", *map(str, files)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- 100 prompts ----------------------------------------------------------------------------------------

@dataclass
class PromptMemory:
    budget: str
    rss: list[int] = field(default_factory=list)
    cache_bytes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    baseline_rss: int = 0

    def growth_after(self, start: int) -> int:
        """RSS at the end minus RSS after prompt `start` (1-based)."""
        return self.rss[-1] - self.rss[start - 1]

    def slope_after(self, start: int) -> float:
        """Least-squares RSS growth per prompt (bytes) from prompt `start` to the end."""
        ys = self.rss[start - 1:]
        xs = list(range(len(ys)))
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs) or 1.0
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den

    def filled_at(self, budget_bytes: int) -> int | None:
        """The first prompt (1-based) after which the cache held at least 90% of its budget."""
        for i, b in enumerate(self.cache_bytes, 1):
            if b >= 0.9 * budget_bytes:
                return i
        return None

    def to_json(self) -> dict[str, Any]:
        return {"budget": self.budget, "rss": self.rss, "cache_bytes": self.cache_bytes, "seconds": self.seconds,
                "baseline_rss": self.baseline_rss}


async def _prompts(url: str, pid: int, count: int) -> PromptMemory:
    import aiohttp  # noqa: PLC0415

    from bench.bench_cache import default_graph  # noqa: PLC0415
    from bench.server_proc import Client, get_json  # noqa: PLC0415

    result = PromptMemory(CACHE_BUDGET, baseline_rss=rss_bytes(pid))
    async with aiohttp.ClientSession() as session:
        client = await Client(session, url).connect()
        try:
            for i in range(count):
                prompt = default_graph(seed=1000 + i, text=f"a red circle number {i}", steps=1, size=128, batch=2,
                                       save=False)
                timing = await client.run_prompt(prompt)
                stats = await get_json(session, url + "/system_stats")
                result.rss.append(rss_bytes(pid))
                result.cache_bytes.append(int(stats["diffloom"]["cache"]["bytes"]))
                result.seconds.append(timing.latency)
                if (i + 1) % 20 == 0:
                    log(f"  prompt {i + 1}: server RSS {result.rss[-1] / MB:.0f} MB, "
                        f"cache {result.cache_bytes[-1] / MB:.1f} MB")
        finally:
            await client.close()
    return result


def prompts_rss(count: int = 100) -> PromptMemory:
    from bench.bench_cache import make_base  # noqa: PLC0415
    from bench.server_proc import ServerProcess  # noqa: PLC0415

    base = make_base(Path(tempfile.mkdtemp(prefix="diffloom-bench-memory-")))
    with ServerProcess(base, "--cache-max-bytes", CACHE_BUDGET) as server:
        return asyncio.run(_prompts(server.url, server.pid, count))


def budget_bytes() -> int:
    from graph.server.options import parse_size  # noqa: PLC0415

    return parse_size(CACHE_BUDGET)


def markdown(models: dict[str, Any] | None, prompts: PromptMemory | None) -> list[str]:
    lines = []
    if models is not None:
        base = models["baseline_rss"]
        lines += ["| state (fresh process, full-size SD1.5 fp32 files) | RSS | model bytes (params + buffers) | "
                  "load + read time |", "|---|---|---|---|",
                  f"| torch + diffloom imported | {base / MB:,.0f} MB | - | - |"]
        for i, (rss, nbytes, secs) in enumerate(zip(models["after"], models["model_bytes"], models["load_seconds"])):
            lines.append(f"| {i + 1} model{'s' if i else ''} loaded | **{rss / MB:,.0f} MB** | "
                         f"{nbytes / MB:,.0f} MB | {secs:.1f} s |")
        lines.append(f"| peak RSS of the process | **{models['peak_rss'] / MB:,.0f} MB** | | |")
        for i, nbytes in enumerate(models.get("gpu_allocated", [])):
            lines.append(f"| GPU memory allocated with {i + 1} model{'s' if i else ''} | {nbytes / MB:,.0f} MB | | |")
    if prompts is not None:
        n = len(prompts.rss)
        filled = prompts.filled_at(budget_bytes())
        start = max(filled or 1, n // 2) if n >= 4 else 1
        lines += ["", f"| 100 distinct prompts (server, cache budget {prompts.budget}) | value |", "|---|---|",
                  f"| server RSS before the first prompt | {prompts.baseline_rss / MB:,.0f} MB |",
                  f"| after prompt 1 / {n // 2} / {n} | {prompts.rss[0] / MB:,.0f} / "
                  f"{prompts.rss[n // 2 - 1] / MB:,.0f} / {prompts.rss[-1] / MB:,.0f} MB |",
                  f"| cache bytes at the end (budget {prompts.budget}) | {prompts.cache_bytes[-1] / MB:.1f} MB |",
                  f"| cache first held 90% of its budget after prompt | {filled} |",
                  f"| RSS growth from prompt {start} to {n} | **{prompts.growth_after(start) / MB:+.1f} MB** "
                  f"({prompts.slope_after(start) / 1024:+.1f} KiB per prompt, least squares) |",
                  f"| peak RSS over the run | {max(prompts.rss) / MB:,.0f} MB |"]
    return lines


def plot(prompts: PromptMemory, path: Path) -> Path:
    """Server RSS and output-cache bytes after each of the distinct prompts."""
    plt = pyplot()

    xs = list(range(1, len(prompts.rss) + 1))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(xs, [r / MB for r in prompts.rss], label="server RSS")
    ax.set_xlabel("distinct prompts run")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(0, max(prompts.rss) / MB * 1.15)
    twin = ax.twinx()
    twin.plot(xs, [b / MB for b in prompts.cache_bytes], color="#fc8d62", label="output cache")
    twin.axhline(budget_bytes() / MB, color="#fc8d62", ls="--", lw=0.8, label=f"cache budget {prompts.budget}")
    twin.set_ylabel("output cache (MB)")
    twin.set_ylim(0, budget_bytes() / MB * 1.6)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [str(h.get_label()) for h in handles], fontsize=8, loc="lower right")
    ax.set_title("Server memory over 100 distinct prompts (tiny SD1, 128 px, batch 2)", fontsize=10)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("files", nargs="+")
    q = sub.add_parser("prompts")
    q.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    if args.command == "probe":
        print(json.dumps(probe(args.files)))
    else:
        print("\n".join(markdown(None, prompts_rss(args.count))))


if __name__ == "__main__":
    main()
