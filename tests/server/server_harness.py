"""Drive a real diffloom server in the tests: a `python server.py` process, plain HTTP and websockets.

`ServerProcess` starts `server.py` on a free loopback port (it asks for port 0 and reads the
address the server prints), with the pure-Python test nodes of `server_nodes.py`. `http()` is a
blocking HTTP call; `Socket` is a websocket client that records every JSON event and binary frame.
"""
from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.server_proc import ServerProcess as BaseServerProcess

ROOT = Path(__file__).resolve().parents[2]
TEST_NODES = "tests.server.server_nodes"


@dataclass
class Reply:
    """An HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
         data: bytes | None = None, timeout: float = 30.0) -> Reply:
    """One HTTP request; `body` is sent as JSON, `data` as is. Error statuses are returned, not raised."""
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        quoted = filename.replace("\\", "\\\\").replace('"', '\\"')  # a quoted-string escapes both
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def image_prompt(*, value: float = 0.5, steps: int = 2, delay: float = 0.0, prefix: str = "t",
                 size: int = 8, fail: bool = False) -> dict[str, Any]:
    """TestImage -> TestSlow -> (TestFail ->) TestSave."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "TestImage", "inputs": {"width": size, "height": size, "value": value}},
        "2": {"class_type": "TestSlow", "inputs": {"images": ["1", 0], "steps": steps, "delay": delay}},
        "3": {"class_type": "TestSave", "inputs": {"images": ["2", 0], "filename_prefix": prefix, "kind": "output"}},
    }
    if fail:
        prompt["4"] = {"class_type": "TestFail", "inputs": {"images": ["2", 0], "message": "planned failure"}}
        prompt["3"]["inputs"]["images"] = ["4", 0]
    return prompt


def ui_workflow() -> dict[str, Any]:
    """A UI-format (editor) workflow of the test nodes, with a muted node and a reroute."""
    return {
        "version": 0.4, "last_node_id": 5, "last_link_id": 4,
        "nodes": [
            {"id": 1, "type": "TestImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [8, 8, 0.42]},
            {"id": 5, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
             "outputs": [{"name": "", "type": "IMAGE", "links": [2]}]},
            {"id": 2, "type": "TestSlow", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3, 4]}], "widgets_values": [2, 0.0]},
            {"id": 3, "type": "TestSave", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 3}],
             "outputs": [], "widgets_values": ["ui", "output"]},
            {"id": 4, "type": "TestShow", "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": 4}],
             "outputs": []},
        ],
        "links": [[1, 1, 0, 5, 0, "IMAGE"], [2, 5, 0, 2, 0, "IMAGE"], [3, 2, 0, 3, 0, "IMAGE"],
                  [4, 2, 0, 4, 0, "IMAGE"]],
    }


class ServerProcess(BaseServerProcess):
    """`python server.py` on a free loopback port, with the test nodes, in its own base directory.

    The built-in nodes (torch, diffusers) are left out unless `builtin_nodes`: most tests only need
    the pure-Python test nodes, and start-up is then a second instead of many.
    """

    def __init__(self, base: Path, *args: str, env: dict[str, str] | None = None, builtin_nodes: bool = False) -> None:
        super().__init__(base, *args, *([] if builtin_nodes else ["--skip-builtin-nodes"]), env=env)
        self.extra_nodes: tuple[str, ...] = (TEST_NODES,)

    def command(self) -> list[str]:
        nodes = [arg for spec in self.extra_nodes for arg in ("--extra-nodes", spec)]
        return [*super().command(), *nodes]

    # ---- conveniences ----------------------------------------------------------------------------

    def get(self, path: str, **kw: Any) -> Reply:
        return http("GET", self.url + path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return http("POST", self.url + path, body, **kw)

    def queue(self, prompt: dict[str, Any], **fields: Any) -> str:
        reply = self.post("/prompt", {"prompt": prompt, **fields})
        assert reply.status == 200, reply.body
        return reply.json()["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The history entry of prompt_id once it is finished."""
        return wait_history(self.url, prompt_id, timeout)


def wait_history(url: str, prompt_id: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = http("GET", f"{url}/history/{prompt_id}", headers=headers)
        if reply.status == 200 and prompt_id in reply.json():
            return reply.json()[prompt_id]
        time.sleep(0.05)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout} s")


@dataclass
class Frame:
    """A binary websocket frame, decoded."""

    event_type: int
    image: bytes
    image_format: int | None = None
    metadata: dict[str, Any] | None = None


def decode_frame(data: bytes) -> Frame:
    (kind,) = struct.unpack(">I", data[:4])
    if kind == 1:
        (fmt,) = struct.unpack(">I", data[4:8])
        return Frame(kind, data[8:], image_format=fmt)
    if kind == 4:
        (length,) = struct.unpack(">I", data[4:8])
        return Frame(kind, data[8 + length:], metadata=json.loads(data[8:8 + length]))
    return Frame(kind, data[4:])


@dataclass
class Socket:
    """A websocket client that keeps every event it receives, in order."""

    ws: aiohttp.ClientWebSocketResponse
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)

    async def next_event(self, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                item = (event["type"], event["data"])
                self.events.append(item)
                return item
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.frames.append(decode_frame(msg.data))
                continue
            raise ConnectionError(f"websocket closed: {msg.type} {msg.data!r}")

    async def until(self, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next_event(max(0.01, deadline - time.monotonic()))
            if predicate(*event):
                return event

    async def until_done(self, prompt_id: str, timeout: float = 60.0) -> list[tuple[str, dict[str, Any]]]:
        """Events of prompt_id up to and including `executing {node: null}`."""
        await self.until(lambda t, d: t == "executing" and d.get("node") is None and d.get("prompt_id") == prompt_id,
                         timeout)
        return [(t, d) for t, d in self.events if d.get("prompt_id") == prompt_id]

    async def quiet(self, seconds: float) -> list[tuple[str, dict[str, Any]]]:
        """Whatever arrives within `seconds`."""
        start = len(self.events)
        try:
            while True:
                await self.next_event(seconds)
        except asyncio.TimeoutError:
            pass
        return self.events[start:]
