"""A real `python server.py` for the benchmarks, and a websocket client that times prompts and events.

The server runs as its own process on a free loopback port, as users run it; the client side is
aiohttp. `Client.run_prompt` posts a prompt and waits for `executing {node: null}` of that prompt
on the client's websocket, which is when a ComfyUI front end shows the result.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT


class ServerProcess:
    """`python server.py --port 0 --base-directory BASE ...` on a free loopback port, as users run it.

    The one launcher of the benchmarks and the tests (which add their nodes by overriding `command`):
    its output is collected line by line, `start` waits for the "listening" line, `stop` sends SIGTERM.
    """

    script = "server.py"
    what = "server.py"
    # Flags every run of this kind of server takes, before the ones given to the constructor.
    fixed_args: tuple[str, ...] = ("--disable-all-custom-nodes",)

    def __init__(self, base: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.base = Path(base)
        self.args = list(args)
        self.env = {**os.environ, "GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []
        self._listening = threading.Event()

    def command(self) -> list[str]:
        """The command line the process runs."""
        return [sys.executable, str(ROOT / self.script), "--port", "0", "--base-directory", str(self.base),
                *self.fixed_args, *self.args]

    def spawned(self, proc: subprocess.Popen[str]) -> None:
        """Called as soon as the process exists, before it is ready (to set limits on it, say)."""

    def spawn(self) -> ServerProcess:
        """Start the process without waiting for it to listen."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.lines = []
        self.url = ""
        self._listening.clear()
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.spawned(self.proc)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def wait_ready(self, timeout: float = 180.0) -> ServerProcess:
        """Wait for the "listening" line; a process that ends or takes too long is stopped, with its output."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.what} did not start:\n" + "".join(self.lines[-40:]))
        return self

    def start(self, timeout: float = 180.0) -> ServerProcess:
        return self.spawn().wait_ready(timeout)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            match = re.search(r"diffloom listening on (http://\S+?)(,|$|\s)", line)
            if match:
                self.url = match.group(1)
                self._listening.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def log(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 30 s); the exit code, None if it never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass
class PromptTiming:
    """One prompt seen from a client: latency from POST to completion, and the nodes that ran."""

    prompt_id: str
    latency: float
    executed: list[str]
    cached: list[str]


@dataclass
class Client:
    """One websocket client (its own client_id) that posts prompts and waits for them."""

    session: Any
    url: str
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    event_latencies_ms: list[float] = field(default_factory=list)
    _ws: Any = None
    _waiters: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    _executed: dict[str, list[str]] = field(default_factory=dict)
    _cached: dict[str, list[str]] = field(default_factory=dict)
    _done: set[str] = field(default_factory=set)
    _reader: asyncio.Task[None] | None = None

    async def connect(self) -> Client:
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self._ws = await self.session.ws_connect(ws_url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        import aiohttp  # noqa: PLC0415

        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue  # binary preview frames
            now_ms = time.time() * 1000.0
            event = json.loads(msg.data)
            data = event.get("data") or {}
            if isinstance(data.get("timestamp"), (int, float)):
                # The server stamps whole milliseconds; the latency is good to about 1 ms.
                self.event_latencies_ms.append(now_ms - data["timestamp"])
            pid = data.get("prompt_id")
            if event.get("type") == "execution_cached" and pid:
                self._cached[pid] = list(data.get("nodes") or [])
            elif event.get("type") == "executing" and pid:
                if data.get("node") is None:
                    self._done.add(pid)
                    waiter = self._waiters.get(pid)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                else:
                    self._executed.setdefault(pid, []).append(str(data["node"]))

    async def run_prompt(self, prompt: dict[str, Any], timeout: float = 600.0) -> PromptTiming:
        """POST /prompt and wait for its completion signal on this client's websocket."""
        t0 = time.perf_counter()
        async with self.session.post(self.url + "/prompt",
                                     json={"prompt": prompt, "client_id": self.client_id}) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"POST /prompt answered {response.status}: {body}")
        pid = body["prompt_id"]
        if pid not in self._done:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[pid] = waiter
            await asyncio.wait_for(waiter, timeout)
        latency = time.perf_counter() - t0
        self._waiters.pop(pid, None)
        return PromptTiming(pid, latency, self._executed.pop(pid, []), self._cached.pop(pid, []))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def get_json(session: Any, url: str) -> Any:
    async with session.get(url) as response:
        return await response.json()
