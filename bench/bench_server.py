"""Server: prompts per second and latency for small cached workflows from many concurrent clients.

A real `server.py` process on loopback. Every client has its own websocket and posts the same
small workflow (the tiny default graph, already cached) in a loop, waiting for each result before
posting the next; the latency is from POST to `executing null`. Websocket event latency is the
time from the server's stamp in an event (`timestamp`, whole milliseconds) to its arrival.

    python bench/bench_server.py [--clients 1 8 32] [--prompts 120]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import log, percentile, pyplot, save_figure  # noqa: E402

LEVELS = (1, 8, 32)


@dataclass
class LoadFigures:
    clients: int
    prompts: int
    seconds: float
    latencies: list[float]
    event_latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.prompts / self.seconds

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1e3

    def event_ms(self, q: float) -> float:
        return percentile(self.event_latencies_ms, q) if self.event_latencies_ms else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"clients": self.clients, "prompts": self.prompts, "seconds": self.seconds, "prompts_per_s": self.rate,
                "latency_ms": {f"p{q}": self.latency_ms(q) for q in (50, 90, 99)},
                "event_latency_ms": {f"p{q}": self.event_ms(q) for q in (50, 90, 99)},
                "event_count": len(self.event_latencies_ms)}


def small_workflow() -> dict[str, Any]:
    """The tiny default graph at 64 px, 4 steps, PreviewImage: cheap once, then fully cached."""
    from bench.bench_cache import default_graph  # noqa: PLC0415

    return default_graph(seed=7, steps=4, size=64, save=False)


async def _load(url: str, clients: int, prompts: int) -> LoadFigures:
    import aiohttp  # noqa: PLC0415

    from bench.server_proc import Client  # noqa: PLC0415

    prompt = small_workflow()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        pool = [await Client(session, url).connect() for _ in range(clients)]
        await pool[0].run_prompt(prompt)  # make sure it is cached
        for c in pool:
            c.event_latencies_ms.clear()
        remaining = prompts
        latencies: list[float] = []

        async def worker(client: Client) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                timing = await client.run_prompt(prompt)
                if timing.executed:
                    raise RuntimeError(f"server bench: a cached workflow ran nodes {timing.executed}")
                latencies.append(timing.latency)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in pool))
        seconds = time.perf_counter() - t0
        events = [ms for c in pool for ms in c.event_latencies_ms]
        await asyncio.gather(*(c.close() for c in pool))
    return LoadFigures(clients, len(latencies), seconds, latencies, events)


def measure(url: str, levels: tuple[int, ...] = LEVELS, prompts: int = 120) -> list[LoadFigures]:
    out = []
    for clients in levels:
        fig = asyncio.run(_load(url, clients, prompts))
        log(f"  {clients} clients: {fig.rate:.1f} prompts/s, latency p50 {fig.latency_ms(50):.1f} ms "
            f"p99 {fig.latency_ms(99):.1f} ms, event p50 {fig.event_ms(50):.1f} ms")
        out.append(fig)
    return out


def markdown(figures: list[LoadFigures]) -> list[str]:
    lines = ["| clients | prompts | prompts/s | latency p50 | p90 | p99 | ws event latency p50 | p90 | p99 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.clients} | {f.prompts} | **{f.rate:.1f}** | {f.latency_ms(50):.1f} ms | "
                     f"{f.latency_ms(90):.1f} ms | {f.latency_ms(99):.1f} ms | {f.event_ms(50):.1f} ms | "
                     f"{f.event_ms(90):.1f} ms | {f.event_ms(99):.1f} ms |")
    return lines


def plot(figures: list[LoadFigures], path: Path) -> Path:
    """Throughput and latency percentiles against the number of concurrent clients."""
    plt = pyplot()

    clients = [f.clients for f in figures]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(clients, [f.rate for f in figures], "o-")
    left.set_xscale("log", base=2)
    left.set_xticks(clients, [str(c) for c in clients])
    left.set_xlabel("concurrent clients")
    left.set_ylabel("prompts per second")
    left.set_title("Throughput, cached workflow", fontsize=10)
    left.set_ylim(bottom=0)
    for q, style in ((50, "o-"), (90, "s--"), (99, "^:")):
        right.plot(clients, [f.latency_ms(q) for f in figures], style, label=f"prompt p{q}")
    right.plot(clients, [f.event_ms(50) for f in figures], "x-", label="ws event p50")
    right.set_xscale("log", base=2)
    right.set_xticks(clients, [str(c) for c in clients])
    right.set_yscale("log")
    right.set_xlabel("concurrent clients")
    right.set_ylabel("ms")
    right.set_title("Latency: POST to result, and websocket events", fontsize=10)
    right.legend(fontsize=7)
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--prompts", type=int, default=120)
    args = parser.parse_args()
    from bench.bench_cache import make_base  # noqa: PLC0415
    from bench.server_proc import ServerProcess  # noqa: PLC0415

    base = make_base(Path(tempfile.mkdtemp(prefix="diffloom-bench-server-")))
    with ServerProcess(base) as server:
        figures = measure(server.url, tuple(args.clients), args.prompts)
    print("\n".join(markdown(figures)))


if __name__ == "__main__":
    main()
