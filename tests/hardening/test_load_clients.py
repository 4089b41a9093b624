"""Load: many websocket clients and HTTP pollers on loopback while prompts run (bounded by count and time).

Each websocket client queues its own prompts and must receive every event of them and none of any
other client's; half of them ask for previews with metadata, whose prompt ids are checked too. HTTP
pollers read the queue, history, stats and node definitions the whole time; their latencies give
requests per second and percentiles. Two clients never read their socket at all. The server's RSS is
sampled with psutil; it must stay within the budget below and the output cache within its byte
budget (--cache-max-bytes).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.hardening.hardening_harness import HardServer, RssSampler, percentile
from tests.hardening.prompt_checks import chain
from tests.server.server_harness import decode_frame, image_prompt

MB = 1 << 20
CACHE_BUDGET = 1 * MB
RSS_GROWTH_BUDGET = 160 * MB  # the Python process, sockets, queues and the 1 MB cache, with room to spare
TIME_LIMIT = 240.0
POLL_PATHS = ["/queue", "/history?max_items=5", "/system_stats", "/prompt", "/object_info/TestSlow",
              "/api/jobs?limit=5"]


@dataclass
class Scale:
    clients: int
    prompts_per_client: int
    pollers: int
    steps: int


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardServer]:
    """A fresh server for the load test, with a 1 MB output cache."""
    proc = HardServer(tmp_path_factory.mktemp("load"), "--cache-max-bytes", "1M", "--preview-size", "64").start()
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


@dataclass
class Client:
    """One websocket client: its prompts and everything it received."""

    sid: str
    metadata: bool
    prompt_ids: set[str] = field(default_factory=set)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    preview_prompt_ids: list[str] = field(default_factory=list)
    plain_previews: int = 0
    finished: set[str] = field(default_factory=set)


async def listen(ws: aiohttp.ClientWebSocketResponse, client: Client) -> None:
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            event = json.loads(msg.data)
            kind, data = event["type"], event["data"]
            client.events.append((kind, data))
            # A quick prompt may finish before its POST is answered: note every end, match them later.
            if kind == "executing" and data.get("node") is None and data.get("prompt_id"):
                client.finished.add(data["prompt_id"])
        elif msg.type == aiohttp.WSMsgType.BINARY:
            frame = decode_frame(msg.data)
            if frame.metadata is not None:
                client.preview_prompt_ids.append(frame.metadata["prompt_id"])
            else:
                client.plain_previews += 1
        else:
            return


async def load_run(server: HardServer, scale: Scale) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    clients = [Client(f"load-{i}", metadata=i % 2 == 0) for i in range(scale.clients)]
    stop_polling = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def poll(index: int) -> None:
            i = index
            while not stop_polling.is_set():
                path = POLL_PATHS[i % len(POLL_PATHS)]
                i += 1
                started = time.perf_counter()
                async with session.get(server.url + path) as reply:
                    await reply.read()
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1
                latencies.append(time.perf_counter() - started)

        sockets = []
        for client in clients:
            ws = await session.ws_connect(f"{server.ws_url}?clientId={client.sid}", max_msg_size=0)
            greeting = await ws.receive_json(timeout=30)
            assert greeting["type"] == "status" and greeting["data"]["sid"] == client.sid
            if client.metadata:
                await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            sockets.append(ws)
        sleepers = [await session.ws_connect(f"{server.ws_url}?clientId=sleeper-{i}") for i in range(2)]
        listeners = [asyncio.ensure_future(listen(ws, c)) for ws, c in zip(sockets, clients)]
        pollers = [asyncio.ensure_future(poll(i)) for i in range(scale.pollers)]
        started = time.perf_counter()
        for round_ in range(scale.prompts_per_client):
            for n, client in enumerate(clients):
                unique = round_ * len(clients) + n  # a size of its own: nothing of it is cached
                prompt = image_prompt(value=0.5, steps=scale.steps, size=4 + unique % 250,
                                      prefix=f"{client.sid}-{round_}")
                prompt["1"]["inputs"]["height"] = 4 + unique // 250
                async with session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": client.sid}) as r:
                    assert r.status == 200, await r.text()
                    client.prompt_ids.add((await r.json())["prompt_id"])

        async def all_finished() -> None:
            while not all(c.prompt_ids <= c.finished for c in clients):
                dead = [t for t in listeners if t.done()]
                assert not dead, f"a websocket listener stopped: {dead[0]}"
                await asyncio.sleep(0.02)

        await asyncio.wait_for(all_finished(), TIME_LIMIT)
        elapsed = time.perf_counter() - started
        stop_polling.set()
        await asyncio.gather(*pollers)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        sleepers_alive = sum(1 for ws in sleepers if not ws.closed)
        for ws in sockets + sleepers:
            await ws.close()
    return {"clients": clients, "latencies": latencies, "statuses": statuses, "elapsed": elapsed,
            "sleepers_alive": sleepers_alive}


def test_many_clients_get_their_own_events_while_the_server_stays_responsive(loaded: HardServer, heavy: bool,
                                                                             figures: Any) -> None:
    scale = Scale(clients=200, prompts_per_client=3, pollers=32, steps=4) if heavy else \
        Scale(clients=40, prompts_per_client=1, pollers=8, steps=3)
    baseline = loaded.rss()
    cache_peak = [0]

    async def watch_cache(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                async with session.get(loaded.url + "/system_stats") as reply:
                    cache = (await reply.json())["diffloom"]["cache"]
                    cache_peak[0] = max(cache_peak[0], cache["bytes"])
                await asyncio.sleep(0.2)

    async def scenario() -> dict[str, Any]:
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(watch_cache(stop))
        try:
            return await load_run(loaded, scale)
        finally:
            stop.set()
            await watcher

    with RssSampler(loaded.proc.pid) as sampler:
        result = asyncio.run(scenario())
    clients: list[Client] = result["clients"]
    all_ids = set().union(*(c.prompt_ids for c in clients))
    for client in clients:
        foreign = {d["prompt_id"] for _, d in client.events if d.get("prompt_id")} - client.prompt_ids
        assert not foreign, f"{client.sid} got events of {len(foreign)} other prompts"
        assert set(client.preview_prompt_ids) <= client.prompt_ids
        for prompt_id in client.prompt_ids:
            kinds = [k for k, d in client.events if d.get("prompt_id") == prompt_id]
            assert kinds[0] == "execution_start" and "executed" in kinds and "execution_success" in kinds, kinds
            assert kinds.count("progress") == scale.steps
        previews = len(client.preview_prompt_ids) if client.metadata else client.plain_previews
        assert previews == scale.steps * len(client.prompt_ids)
    history = loaded.get("/history").json()
    assert all_ids <= set(history) and all(history[p]["status"]["status_str"] == "success" for p in all_ids)
    latencies = result["latencies"]
    growth = sampler.peak - baseline
    assert set(result["statuses"]) == {200}, result["statuses"]
    assert result["sleepers_alive"] == 2
    assert cache_peak[0] <= CACHE_BUDGET
    assert growth < RSS_GROWTH_BUDGET, f"RSS grew by {growth / MB:.0f} MB"
    assert max(latencies) < 10.0  # a hang detector, not a speed test
    figures.record(
        ws_clients=scale.clients, silent_clients=2, prompts=len(all_ids), http_pollers=scale.pollers,
        http_requests=len(latencies), seconds=round(result["elapsed"], 1),
        requests_per_second=round(len(latencies) / result["elapsed"], 1),
        prompts_per_second=round(len(all_ids) / result["elapsed"], 2),
        latency_ms_p50=round(1000 * percentile(latencies, 50), 1),
        latency_ms_p95=round(1000 * percentile(latencies, 95), 1),
        latency_ms_p99=round(1000 * percentile(latencies, 99), 1),
        latency_ms_max=round(1000 * max(latencies), 1),
        rss_baseline_mb=round(baseline / MB, 1), rss_peak_mb=round(sampler.peak / MB, 1),
        rss_growth_mb=round(growth / MB, 1), cache_peak_bytes=cache_peak[0], cache_budget_bytes=CACHE_BUDGET,
        foreign_events=0, prompts_lost=0)


BYTES_PER_NODE_BUDGET = 4096


def test_a_big_prompt_sends_events_in_proportion_to_its_size(loaded: HardServer, heavy: bool, figures: Any) -> None:
    """The events of an n-node prompt must grow like n, not n^2: one client must not be able to make the
    server build and send gigabytes with a prompt of a few hundred kilobytes."""
    size = 2000 if heavy else 600
    prompt = chain(size)
    prompt["0"]["inputs"]["text"] = f"fresh-{time.time_ns()}"  # nothing of it is cached

    async def scenario() -> dict[str, int]:
        received: dict[str, int] = {}
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{loaded.ws_url}?clientId=big-prompt", max_msg_size=0)
            await ws.receive_json(timeout=30)
            async with session.post(loaded.url + "/prompt", json={"prompt": prompt, "client_id": "big-prompt"}) as r:
                assert r.status == 200, await r.text()
                prompt_id = (await r.json())["prompt_id"]
            while True:
                msg = await ws.receive(timeout=TIME_LIMIT)
                event = json.loads(msg.data)
                received[event["type"]] = received.get(event["type"], 0) + len(msg.data)
                if event["type"] == "executing" and event["data"] == {"node": None, "prompt_id": prompt_id}:
                    break
            await ws.close()
        return received

    received = asyncio.run(scenario())
    total = sum(received.values())
    figures.record(nodes=size + 1, websocket_bytes=total, bytes_per_node=total // (size + 1),
                   progress_state_bytes=received.get("progress_state", 0))
    assert total < BYTES_PER_NODE_BUDGET * (size + 1), (
        f"{total} bytes of events for {size + 1} nodes ({total // (size + 1)} per node): "
        f"progress_state sent {received.get('progress_state', 0)} bytes, the state of every node again at every node")
