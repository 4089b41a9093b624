"""The PromptServer facade: messages to the prompt's client or the server's broadcaster, plugin routes over HTTP."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from nodes.compat.server import PromptServer, mount_routes


@pytest.fixture
def facade() -> PromptServer:
    return PromptServer()


def test_send_sync_inside_a_prompt_goes_to_its_client(facade: PromptServer, node_run: Any) -> None:
    sent: list[tuple[str, Any, str | None]] = []
    facade.bind(broadcast=lambda e, d, sid: sent.append((e, d, sid)))
    with node_run("3", client_id="c1") as run:
        facade.send_sync("pack.event", {"n": 1})
        facade.send_sync("pack.event", {"n": 2}, "c1")
        facade.send_sync("pack.event", {"n": 3}, "someone-else")
        assert facade.client_id == "c1" and facade.last_node_id == "3" and facade.last_prompt_id == "prompt-1"
    assert run.events == [("pack.event", {"n": 1}), ("pack.event", {"n": 2})]
    assert sent == [("pack.event", {"n": 3}, "someone-else")]


def test_send_sync_outside_a_prompt_is_broadcast(facade: PromptServer) -> None:
    facade.send_sync("pack.hello", {"x": 1})  # no server bound: nobody listens, nothing fails
    sent: list[tuple[str, Any, str | None]] = []
    facade.bind(broadcast=lambda e, d, sid: sent.append((e, d, sid)))
    facade.send_sync("pack.hello", {"x": 2})
    asyncio.run(facade.send("pack.hello", {"x": 3}, "s9"))
    assert sent == [("pack.hello", {"x": 2}, None), ("pack.hello", {"x": 3}, "s9")]
    facade.client_id, facade.last_node_id = "c7", "12"
    assert (facade.client_id, facade.last_node_id, facade.last_prompt_id) == ("c7", "12", None)


def test_app_is_the_bound_server_app(facade: PromptServer) -> None:
    with pytest.raises(RuntimeError, match="no diffloom server is running"):
        _ = facade.app
    app = web.Application()
    facade.bind(app=app)
    assert facade.app is app
    assert PromptServer.instance is not facade and isinstance(PromptServer.instance, PromptServer)


async def _serve_and_get(app: web.Application, paths: list[str]) -> list[tuple[int, str]]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            out = []
            for path in paths:
                async with session.get(f"http://127.0.0.1:{port}{path}") as reply:
                    out.append((reply.status, await reply.text()))
            return out
    finally:
        await runner.cleanup()


def test_plugin_routes_are_served_bare_and_under_api(facade: PromptServer, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("static hello")

    @facade.routes.get("/pack/old")
    async def old(request: web.Request) -> web.Response:
        return web.Response(text="old")

    @facade.routes.get("/pack/old")
    async def newer(request: web.Request) -> web.Response:
        return web.Response(text="newer")

    @facade.routes.post("/prompt")
    async def clash(request: web.Request) -> web.Response:
        return web.Response(text="plugin prompt")

    facade.routes.static("/pack/files", tmp_path)
    app = web.Application()
    app.router.add_post("/prompt", clash)
    problems = mount_routes(app, facade.routes)
    assert len(problems) == 1 and problems[0].startswith("plugin route POST /prompt not added:")
    got = asyncio.run(_serve_and_get(app, ["/pack/old", "/api/pack/old", "/pack/files/hello.txt",
                                           "/api/pack/files/hello.txt"]))
    assert got == [(200, "newer"), (200, "newer"), (200, "static hello"), (200, "static hello")]
