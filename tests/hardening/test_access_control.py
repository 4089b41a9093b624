"""Access: a loud warning when listening beyond loopback without a token; with a token every route, the
editor's files and the websocket refuse requests without it; cross-site requests are refused on every
route; CORS headers appear only when asked for.

The routes are not listed by hand: they are read from the app `create_app` builds, so a route added
later is checked too. The warning is checked on a real `server.py` whose port is already taken, so a
server without a token never actually listens beyond loopback.
"""
from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from graph.registry import NodeRegistry
from graph.server import STATE, ServerOptions, create_app
from nodes.folders import FolderPaths
from tests.hardening import hardening_nodes
from tests.hardening.hardening_harness import HardServer
from tests.server import server_nodes
from tests.server.server_harness import ROOT, http

TOKEN = "hardening-token-0123456789"
STATIC = ["/", "/index.html", "/js/app.js", "/some/file.css", "/extensions/x/y.js"]


def all_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path) of every route the app registers, placeholders filled in."""
    registry = NodeRegistry()
    registry.add_module(server_nodes)
    registry.add_module(hardening_nodes)
    app = create_app(ServerOptions(base_directory=tmp_path, database=tmp_path / "routes.db"), registry,
                     FolderPaths(tmp_path, create_dirs=True))
    found = set()
    for route in app.router.routes():
        path = re.sub(r"\{[^}:]+:[^}]+\}", "a/b.json", route.resource.canonical)
        path = re.sub(r"\{[^}]+\}", "x", path)
        found.add((route.method, path))
    app[STATE].store.close()
    return sorted(found)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardServer]:
    """A server on every interface, with a token (so nothing is open while it runs)."""
    proc = HardServer(tmp_path_factory.mktemp("guarded"), "--listen", "0.0.0.0", "--auth-token", TOKEN).start()
    proc.url = proc.url.replace("0.0.0.0", "127.0.0.1")
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


def request(server: HardServer, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return http(method, server.url + path, data=b"{}" if method in ("POST", "PATCH", "PUT") else None,
                headers=headers)


def test_with_a_token_every_route_refuses_requests_without_it(guarded: HardServer, tmp_path: Path,
                                                              figures: Any) -> None:
    routes = all_routes(tmp_path) + [("GET", p) for p in STATIC] + [("HEAD", "/"), ("OPTIONS", "/prompt")]
    refused = 0
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Cookie": "diffloom_token=wrong"}):
            reply = request(guarded, method, path + "?token=wrong" if not headers else path, headers)
            assert reply.status == 401, (method, path, headers, reply.status)
            refused += 1
        if method != "HEAD":
            assert b"unauthorized" in reply.body
    opened = [request(guarded, m, p, {"Authorization": f"Bearer {TOKEN}"}).status for m, p in routes]
    assert 401 not in opened

    async def sockets() -> int:
        count = 0
        async with aiohttp.ClientSession() as session:
            for path in ("/ws", "/api/ws"):
                for url in (guarded.url + path, f"{guarded.url}{path}?token=wrong"):
                    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                        await session.ws_connect(url.replace("http://", "ws://"))
                    assert caught.value.status == 401
                    count += 1
            ws = await session.ws_connect(f"{guarded.url.replace('http://', 'ws://')}/ws?token={TOKEN}")
            assert (await ws.receive_json(timeout=10))["type"] == "status"
            await ws.close()
        return count

    refused += asyncio.run(sockets())
    assert "WITHOUT a token" not in guarded.log()
    figures.record(routes=len(routes), requests_refused=refused, websocket_paths=2)


def test_every_route_refuses_cross_site_requests(target: HardServer, tmp_path: Path, figures: Any) -> None:
    routes = all_routes(tmp_path) + [("GET", p) for p in STATIC]
    count = 0
    for method, path in routes:
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Host": "attacker.example", "Origin": "http://attacker.example"}):
            reply = request(target, method, path, headers)
            assert reply.status == 403, (method, path, headers, reply.status)
            assert "Access-Control-Allow-Origin" not in reply.headers
            count += 1
    figures.record(routes=len(routes), requests_refused=count)


def test_cors_is_off_unless_asked_for(target: HardServer, tmp_path: Path) -> None:
    for method, path in all_routes(tmp_path):
        reply = request(target, method, path, {"Origin": target.url})
        assert not any(h.lower().startswith("access-control-") for h in reply.headers), (method, path)
    preflight = http("OPTIONS", target.url + "/prompt", headers={"Origin": "https://app.example",
                                                                  "Access-Control-Request-Method": "POST"})
    assert preflight.status == 403 and "Access-Control-Allow-Origin" not in preflight.headers


def start_expecting_failure(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run server.py (torch-free) that must fail to bind; its exit code and output."""
    cmd = [sys.executable, str(ROOT / "server.py"), "--base-directory", str(tmp_path), "--skip-builtin-nodes",
           "--disable-all-custom-nodes", "--extra-nodes", "tests.server.server_nodes", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    return done.returncode, done.stdout + done.stderr


def test_listening_beyond_loopback_without_a_token_warns_loudly(tmp_path: Path, target: HardServer,
                                                                figures: Any) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("0.0.0.0", 0))  # bound, never listening: the server's bind fails, nothing is ever exposed
    port = holder.getsockname()[1]
    try:
        code, output = start_expecting_failure(tmp_path / "a", "--listen", "0.0.0.0", "--port", str(port))
    finally:
        holder.close()
    assert code != 0 and "diffloom listening on" not in output
    warning = [line for line in output.splitlines() if "WITHOUT a token" in line]
    assert warning and "0.0.0.0" in warning[0] and "--auth-token" in warning[0]
    assert output.count("!" * 78) >= 2  # a banner, not a line lost among others
    code, output = start_expecting_failure(tmp_path / "b", "--listen", "203.0.113.7", "--port", "0")
    assert code != 0 and "WITHOUT a token" in output  # an address of another network: refused by the OS
    assert "WITHOUT a token" not in target.log()  # loopback only: no warning
    figures.record(warned_for=["0.0.0.0", "203.0.113.7"], not_warned_for=["127.0.0.1", "0.0.0.0 with a token"])
