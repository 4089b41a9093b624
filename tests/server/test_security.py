"""Cross-site requests refused, DNS-rebinding Host names refused, bearer token on every route, CORS when asked."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from graph.registry import NodeRegistry
from graph.server import STATE, ServerOptions, create_app
from nodes.folders import FolderPaths
from tests.server.server_harness import ServerProcess, http, image_prompt, wait_history

TOKEN = "s3cret-token-for-tests"


def host_of(server: ServerProcess) -> str:
    return server.url.removeprefix("http://")


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://evil.example:80"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
])
def test_cross_site_requests_are_refused(server: ServerProcess, headers: dict[str, str]) -> None:
    before = server.get("/prompt").json()["exec_info"]["queue_remaining"]
    reply = server.post("/api/prompt", {"prompt": image_prompt()}, headers=headers)
    assert reply.status == 403 and reply.json()["error"]["type"] == "cross_origin"
    assert server.get("/object_info", headers=headers).status == 403
    assert server.get("/prompt").json()["exec_info"]["queue_remaining"] == before


def test_other_port_on_the_same_host_is_another_origin(server: ServerProcess) -> None:
    host, port = host_of(server).split(":")
    assert server.get("/queue", headers={"Origin": f"http://{host}:{int(port) + 1}"}).status == 403


def test_same_origin_and_scripts_are_allowed(server: ServerProcess) -> None:
    same = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    assert server.get("/queue", headers=same).status == 200
    assert server.get("/queue").status == 200  # no Origin: a script, not a browser page


def test_non_loopback_host_is_refused_on_a_loopback_server(server: ServerProcess) -> None:
    port = host_of(server).split(":")[1]
    rebound = server.get("/queue", headers={"Host": f"attacker.example:{port}",
                                            "Origin": f"http://attacker.example:{port}"})
    assert rebound.status == 403 and rebound.json()["error"]["type"] == "forbidden_host"
    assert server.get("/queue", headers={"Host": f"localhost:{port}"}).status == 200


def test_cross_site_websocket_is_refused(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(server.ws_url, headers={"Origin": "http://evil.example"})
            assert caught.value.status == 403

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a token from the environment and CORS for one origin."""
    proc = ServerProcess(tmp_path_factory.mktemp("guarded"), "--enable-cors-header", "https://app.example",
                         env={"DIFFLOOM_AUTH_TOKEN": TOKEN}).start()
    yield proc
    assert proc.stop() == 0


@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/object_info"), ("GET", "/api/queue"),
                                          ("POST", "/prompt"), ("GET", "/view?filename=x.png"),
                                          ("POST", "/upload/image"), ("GET", "/system_stats"),
                                          ("GET", "/api/jobs"), ("POST", "/interrupt"), ("GET", "/ws")])
def test_token_is_required_everywhere(guarded: ServerProcess, method: str, path: str) -> None:
    reply = http(method, guarded.url + path, data=b"{}" if method == "POST" else None)
    assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = http(method, guarded.url + path, data=b"{}" if method == "POST" else None,
                 headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 401


def test_token_opens_the_api(guarded: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = http("POST", guarded.url + "/prompt", {"prompt": image_prompt(prefix="tok")}, headers=auth)
    assert reply.status == 200
    prompt_id = reply.json()["prompt_id"]
    entry = wait_history(guarded.url, prompt_id, headers=auth)
    image = entry["outputs"]["3"]["images"][0]["filename"]
    assert http("GET", f"{guarded.url}/view?filename={image}", headers=auth).status == 200


def test_token_in_query_sets_a_cookie_for_the_browser(guarded: ServerProcess) -> None:
    page = http("GET", f"{guarded.url}/?token={TOKEN}")
    assert page.status == 200
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith(f"diffloom_token={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert http("GET", guarded.url + "/object_info", headers={"Cookie": f"diffloom_token={TOKEN}"}).status == 200


def test_websocket_with_token(guarded: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{guarded.ws_url}?token={TOKEN}")
            greeting = await ws.receive_json(timeout=10)
            assert greeting["type"] == "status"
            await ws.close()
            header_ws = await session.ws_connect(guarded.ws_url, headers={"Authorization": f"Bearer {TOKEN}"})
            assert (await header_ws.receive_json(timeout=10))["type"] == "status"
            await header_ws.close()

    asyncio.run(scenario())


def test_cors_mode_allows_the_named_origin(guarded: ServerProcess) -> None:
    preflight = http("OPTIONS", guarded.url + "/api/prompt",
                     headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                              "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    reply = http("GET", guarded.url + "/api/queue",
                 headers={"Origin": "https://app.example", "Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 200 and reply.headers["Access-Control-Allow-Origin"] == "https://app.example"
    refused = http("GET", guarded.url + "/api/queue", headers={"Origin": "https://app.example"})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_listening_beyond_loopback_without_token_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = ServerOptions(listen=["0.0.0.0"], base_directory=tmp_path)
    with caplog.at_level(logging.WARNING, logger="diffloom.server"):
        app = create_app(options, NodeRegistry(), FolderPaths(tmp_path, create_dirs=True))
    assert any("WITHOUT a token" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diffloom.server"):
        guarded_app = create_app(ServerOptions(listen=["0.0.0.0"], base_directory=tmp_path, auth_token="x",
                                               database=tmp_path / "other.db"),
                                 NodeRegistry(), FolderPaths(tmp_path, create_dirs=True))
    assert not any("WITHOUT a token" in r.getMessage() for r in caplog.records)
    for made in (app, guarded_app):
        made[STATE].store.close()
