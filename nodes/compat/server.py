"""ComfyUI's `PromptServer` as plugins use it: `PromptServer.instance.routes` and `send_sync`.

`from server import PromptServer` gives this class (diffloom's `server.py` re-exports it). The
instance exists from import time, so plugins can add routes while they load; the server then
mounts `routes` both bare and under `/api` (`mount_routes`) and binds its loop and broadcaster
(`bind`). Messages sent from inside a running node go to that prompt's client through the node's
context; others go to the broadcaster (all clients, or `sid`).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from aiohttp import web

from graph import context
from graph.plugins import PluginReport

__all__ = ["PLUGIN_REPORT", "PromptServer", "attach_plugins", "mount_routes"]

log = logging.getLogger(__name__)

Broadcast = Callable[[str, Any, "str | None"], None]


class PromptServer:
    """The facade plugins see as `PromptServer.instance`."""

    instance: ClassVar[PromptServer]

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.supports = ["custom_nodes_from_web"]
        self._app: web.Application | None = None
        self._broadcast: Broadcast | None = None
        self._client_id: str | None = None
        self._last_node_id: str | None = None

    # ---- what the server provides -----------------------------------------------------------------
    def bind(self, *, app: web.Application | None = None, loop: asyncio.AbstractEventLoop | None = None,
             broadcast: Broadcast | None = None) -> None:
        """Called by the server: its app, its event loop and a thread-safe `broadcast(event, data, sid)`."""
        self._app, self.loop, self._broadcast = app, loop, broadcast

    @property
    def app(self) -> web.Application:
        if self._app is None:
            raise RuntimeError("PromptServer.instance.app is not available: no diffloom server is running "
                               "(add routes with PromptServer.instance.routes instead)")
        return self._app

    @property
    def client_id(self) -> str | None:
        """The client of the running prompt (inside a node), else the last one seen."""
        ctx = context.current()
        if ctx is not None and ctx.extra_data.get("client_id"):
            return ctx.extra_data["client_id"]
        return self._client_id

    @client_id.setter
    def client_id(self, value: str | None) -> None:
        self._client_id = value

    @property
    def last_node_id(self) -> str | None:
        ctx = context.current()
        return ctx.node_id if ctx is not None else self._last_node_id

    @last_node_id.setter
    def last_node_id(self, value: str | None) -> None:
        self._last_node_id = value

    @property
    def last_prompt_id(self) -> str | None:
        ctx = context.current()
        return ctx.prompt_id if ctx is not None else None

    # ---- messages ----------------------------------------------------------------------------------
    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Send a websocket message from any thread: to the running prompt's client, or broadcast."""
        ctx = context.current()
        if ctx is not None and (sid is None or sid == ctx.extra_data.get("client_id")):
            context.send(event, data)
            return
        if self._broadcast is None:
            log.debug("PromptServer.send_sync(%r): no server bound, nobody to send to", event)
            return
        self._broadcast(event, data, sid)

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)


PromptServer.instance = PromptServer()


def _prefixed(route: web.AbstractRouteDef, prefix: str) -> web.AbstractRouteDef:
    if isinstance(route, web.RouteDef):
        kwargs = {k: v for k, v in route.kwargs.items() if k != "name"} if prefix else dict(route.kwargs)
        return web.RouteDef(route.method, prefix + route.path, route.handler, kwargs)
    if isinstance(route, web.StaticDef):
        kwargs = {k: v for k, v in route.kwargs.items() if k != "name"} if prefix else dict(route.kwargs)
        return web.StaticDef(prefix + route.prefix, route.path, kwargs)
    raise TypeError(f"unsupported route definition {route!r}")


def _key(route: web.AbstractRouteDef) -> tuple[str, str]:
    if isinstance(route, web.RouteDef):
        return route.method.upper(), route.path
    if isinstance(route, web.StaticDef):
        return "STATIC", route.prefix
    return "?", repr(route)


def mount_routes(app: web.Application, routes: web.RouteTableDef | None = None,
                 prefixes: tuple[str, ...] = ("", "/api")) -> list[str]:
    """Add plugin routes to the app, bare and under each prefix; returns problems (a clash with a route).

    When a plugin was imported twice in one process (two servers in tests), its latest definition
    of a method and path wins.
    """
    table = list(routes if routes is not None else PromptServer.instance.routes)
    latest: dict[tuple[str, str], web.AbstractRouteDef] = {}
    for route in table:
        latest.pop(_key(route), None)
        latest[_key(route)] = route
    # aiohttp only notices a duplicate next to the route it repeats; a later one would be shadowed silently.
    taken = {(r.method.upper(), r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    problems = []
    for route in latest.values():
        for prefix in prefixes:
            definition = _prefixed(route, prefix)
            method, path = _key(definition)
            try:
                if (method, path) in taken or ("*", path) in taken:
                    raise RuntimeError("the server already has this route")
                definition.register(app.router)
            except (RuntimeError, ValueError) as exc:
                problems.append(f"plugin route {method} {path} not added: {exc}")
                log.warning("plugin route %s %s not added: %s", method, path, exc)
                continue
            taken.add((method, path))
    return problems


PLUGIN_REPORT = web.AppKey("diffloom_plugin_report", PluginReport)


async def plugin_report(request: web.Request) -> web.Response:
    """GET /diffloom/plugins: every plugin with its status, cause, nodes, timing and web folder."""
    report = request.app.get(PLUGIN_REPORT) or PluginReport()
    return web.json_response(report.to_json())


def attach_plugins(app: web.Application, report: PluginReport) -> list[str]:
    """Serve loaded plugins on a diffloom app (before it starts); returns route problems.

    Adds `GET /diffloom/plugins` (and under /api), the plugins' web folders to `/extensions`, their
    `PromptServer.instance.routes` (bare and under /api), and binds `send_sync` to the app's
    websocket hub and `interrupt_current_processing` to its worker.
    """
    from graph.server.state import STATE  # noqa: PLC0415 - only when a server is assembled

    from .interrupts import set_interrupt_handler  # noqa: PLC0415

    state = app[STATE]
    app[PLUGIN_REPORT] = report
    state.runtime.extensions.update(report.web_directories())
    for prefix in ("", "/api"):
        app.router.add_get(prefix + "/diffloom/plugins", plugin_report)
    problems = mount_routes(app)
    hub, worker = state.hub, state.worker

    def broadcast(event: str, data: Any, sid: str | None) -> None:
        hub.call_threadsafe(hub.send, event, data, sid)

    PromptServer.instance.bind(app=app, broadcast=broadcast)

    async def remember_loop(app: web.Application) -> None:
        PromptServer.instance.loop = asyncio.get_running_loop()

    app.on_startup.append(remember_loop)
    set_interrupt_handler(lambda value: worker.interrupt() if value else None)
    return problems
