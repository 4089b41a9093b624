"""Plugins on a real diffloom server: loaded from a plugin folder, served over HTTP and websockets.

The app is assembled as server.py assembles it (create_app, then nodes.compat.attach_plugins with
the loader's report) and served on a loopback port; everything is checked over real HTTP.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from graph.registry import NodeRegistry
from graph.server import BackgroundServer, ServerOptions, ServerRuntime, create_app
from nodes.compat import bind_server, load_custom_nodes, uninstall_compat_modules
from nodes.compat.server import attach_plugins
from nodes.folders import FolderPaths
from tests.graph import sample_nodes
from tests.server.server_harness import Socket, http, wait_history

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "graph" / "plugins_fixture"


class PluginServer:
    """The running server and its plugin report."""

    def __init__(self, background: BackgroundServer, report: Any) -> None:
        self.background = background
        self.report = report
        self.url = background.url

    def get(self, path: str) -> Any:
        return http("GET", self.url + path)

    def post(self, path: str, body: Any = None) -> Any:
        return http("POST", self.url + path, body)

    def queue(self, prompt: dict[str, Any], **fields: Any) -> str:
        reply = self.post("/prompt", {"prompt": prompt, **fields})
        assert reply.status == 200, reply.body
        return reply.json()["prompt_id"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginServer]:
    base = tmp_path_factory.mktemp("plugin_server")
    registry = NodeRegistry()
    registry.add_module(sample_nodes)
    report = load_custom_nodes(registry, paths=[str(FIXTURE)])
    options = ServerOptions(base_directory=base, port=0)
    app = create_app(options, registry, FolderPaths(base, create_dirs=True),
                     runtime=ServerRuntime(extensions=report.web_directories()))
    problems = attach_plugins(app, report)
    assert problems == []
    background = BackgroundServer(app).start()
    try:
        yield PluginServer(background, report)
    finally:
        background.stop()
        bind_server()
        uninstall_compat_modules()


def test_object_info_lists_loaded_plugin_nodes_only(server: PluginServer) -> None:
    info = server.get("/object_info").json()
    for name in ("GoodGreet", "Shout", "V1Number", "V1Multiply", "ExplodingNode", "ClashFree", "Number"):
        assert name in info
    for name in ("BadPackFine", "NeedsConfig", "NoSpec", "FromTheFuture"):
        assert name not in info
    one = server.get("/api/object_info/V1Number").json()["V1Number"]
    assert one["python_module"] == "custom_nodes.v1_pack" and one["display_name"] == "Number (V1)"
    assert info["Number"]["python_module"] == "tests.graph.sample_nodes"


def test_plugin_report_route(server: PluginServer) -> None:
    for path in ("/diffloom/plugins", "/api/diffloom/plugins"):
        data = server.get(path).json()
        statuses = {p["name"]: p["status"] for p in data["plugins"]}
        assert statuses["good_pack"] == "loaded" and statuses["raises_on_import"] == "failed"
        assert "raises_on_import" in data["failed"] and "good_pack" not in data["failed"]
        missing = next(p for p in data["plugins"] if p["name"] == "missing_requirement")
        assert missing["cause"].startswith("missing requirement: diffloom_fixture_missing_dependency")
        assert data["api_version"] == "1.0"


def test_extensions_are_listed_and_served_from_plugin_folders(server: PluginServer) -> None:
    listed = server.get("/extensions").json()
    assert "/extensions/good_pack/good.js" in listed and "/extensions/v1_pack/v1_pack.js" in listed
    assert not [u for u in listed if "web_escape" in u or u.endswith(".txt")]
    script = server.get("/extensions/v1_pack/v1_pack.js")
    assert script.status == 200 and b"V1_PACK" in script.body
    assert server.get("/extensions/v1_pack/%2e%2e/__init__.py").status in (403, 404)
    assert server.get("/extensions/web_escape/good.js").status == 404


def test_v1_prompt_runs_through_the_queue(server: PluginServer) -> None:
    prompt_id = server.queue({
        "1": {"class_type": "V1SplitWords", "inputs": {"text": "x y"}},
        "2": {"class_type": "V1Upper", "inputs": {"word": ["1", 0]}},
        "3": {"class_type": "V1JoinWords", "inputs": {"words": ["2", 0], "sep": "/"}},
        "4": {"class_type": "V1Number", "inputs": {"value": 5}},
        "5": {"class_type": "V1Multiply", "inputs": {"value": ["4", 0], "times": 3}},
        "6": {"class_type": "V1ShowText", "inputs": {"value": ["3", 0]}},
        "7": {"class_type": "V1ShowText", "inputs": {"value": ["5", 0]}},
        "8": {"class_type": "GoodGreet", "inputs": {"name": "server"}},
        "9": {"class_type": "GoodShow", "inputs": {"text": ["8", 0]}}})
    entry = wait_history(server.url, prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["6"]["text"] == ["X/Y"] and entry["outputs"]["7"]["text"] == ["15"]
    assert entry["outputs"]["9"] == {"text": ["hello server"]}


def test_invalid_v1_values_are_refused_at_queue_time(server: PluginServer) -> None:
    reply = server.post("/prompt", {"prompt": {"1": {"class_type": "V1Even", "inputs": {"value": 5}},
                                               "2": {"class_type": "V1ShowText", "inputs": {"value": ["1", 0]}}}})
    assert reply.status == 400 and "value must be even, got 5" in reply.body.decode()


def test_raising_plugin_node_fails_its_prompt_and_the_server_keeps_serving(server: PluginServer) -> None:
    bad = server.queue({"1": {"class_type": "Number", "inputs": {"value": 2}},
                        "2": {"class_type": "V1Exploding", "inputs": {"value": ["1", 0]}},
                        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}})
    entry = wait_history(server.url, bad)
    assert entry["status"]["status_str"] == "error"
    error = next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")
    assert error["exception_message"] == "[plugin raising_node] V1 node divided 2 by zero"
    assert error["plugin"] == "raising_node" and error["node_type"] == "V1Exploding"
    good = server.queue({"1": {"class_type": "GoodGreet", "inputs": {"name": "after"}},
                         "2": {"class_type": "GoodShow", "inputs": {"text": ["1", 0]}}})
    assert wait_history(server.url, good)["outputs"]["2"] == {"text": ["hello after"]}


def test_plugin_routes_and_websocket_messages(server: PluginServer) -> None:
    for path in ("/v1_pack/ping", "/api/v1_pack/ping"):
        reply = server.get(path)
        assert reply.status == 200 and reply.json()["pong"] is True and "V1Sleep" in reply.json()["nodes"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            client_id = uuid.uuid4().hex
            sock = Socket(await session.ws_connect(server.url.replace("http", "ws") + f"/ws?clientId={client_id}"))
            assert (await sock.next_event())[0] == "status"
            # send_sync inside a node: to the client that queued the prompt
            prompt_id = await asyncio.to_thread(server.queue, {
                "1": {"class_type": "V1Number", "inputs": {"value": 3}},
                "2": {"class_type": "V1ShowText", "inputs": {"value": ["1", 0]}}}, client_id=client_id)
            events = await sock.until_done(prompt_id)
            shown = [d for k, d in sock.events if k == "v1_pack.shown"]
            assert shown == [{"node": "2", "text": "3", "nodes_in_prompt": 2}]
            assert any(k == "executed" for k, _ in events)
            # send_sync from a plugin route, outside any prompt: broadcast
            await asyncio.to_thread(server.post, "/v1_pack/announce", {"hello": "everyone"})
            kind, data = await sock.until(lambda k, d: k == "v1_pack.announce")
            assert data == {"hello": "everyone"}
            await sock.ws.close()

    asyncio.run(scenario())


def test_a_plugin_route_can_interrupt_the_running_prompt(server: PluginServer) -> None:
    async def scenario() -> str:
        async with aiohttp.ClientSession() as session:
            sock = Socket(await session.ws_connect(server.url.replace("http", "ws") + "/ws?clientId=stopper"))
            prompt_id = await asyncio.to_thread(server.queue, {
                "1": {"class_type": "V1Progress", "inputs": {"steps": 400, "delay": 0.05}},
                "2": {"class_type": "V1ShowText", "inputs": {"value": ["1", 0]}}}, client_id="stopper")
            await sock.until(lambda k, d: k == "progress" and d.get("prompt_id") == prompt_id)
            await asyncio.to_thread(server.post, "/api/v1_pack/stop")
            await sock.until_done(prompt_id)
            await sock.ws.close()
            return prompt_id

    prompt_id = asyncio.run(scenario())
    entry = wait_history(server.url, prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"


def test_server_py_loads_plugins_from_extra_model_paths(tmp_path: Path) -> None:
    """`python server.py` itself: plugin folders from extra_model_paths.yaml, report, extensions, a V1 prompt."""
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"fixture:\n  custom_nodes: {FIXTURE}\n")
    cmd = [sys.executable, str(ROOT / "server.py"), "--port", "0", "--base-directory", str(tmp_path / "base"),
           "--extra-model-paths-config", str(config)]
    env = {**os.environ, "GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            lines.append(line)
            match = re.search(r"diffloom listening on (http://\S+?)(,|$|\s)", line)
            if match:
                url = match.group(1)
                break
        assert url, "".join(lines[-40:])
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
        plugins = http("GET", url + "/api/diffloom/plugins").json()
        statuses = {p["name"]: p["status"] for p in plugins["plugins"]}
        assert statuses["v1_pack"] == "loaded" and statuses["good_pack"] == "loaded"
        assert statuses["raises_on_import"] == "failed" and statuses["needs_comfy_sd"] == "failed"
        assert "/extensions/v1_pack/v1_pack.js" in http("GET", url + "/extensions").json()
        assert http("GET", url + "/extensions/good_pack/good.js").body.startswith(b"// The good fixture")
        assert http("GET", url + "/api/v1_pack/ping").json()["pong"] is True
        reply = http("POST", url + "/prompt", {"prompt": {
            "1": {"class_type": "V1Number", "inputs": {"value": 4}},
            "2": {"class_type": "V1Multiply", "inputs": {"value": ["1", 0], "times": 2}},
            "3": {"class_type": "V1ShowText", "inputs": {"value": ["2", 0]}}}})
        assert reply.status == 200, reply.body
        entry = wait_history(url, reply.json()["prompt_id"])
        assert entry["outputs"]["3"]["text"] == ["8"]
        log = "".join(lines)
        assert "plugin raises_on_import" in log and "the pack is broken on purpose" in log
        assert "Import times for plugins:" in log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, "".join(lines[-40:])
