"""The server's shared state, reached from handlers through one typed app key, and small request helpers."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..executor import Executor
from ..prompt_store import PromptStore
from ..registry import NodeRegistry
from ..untrusted_json import UntrustedJSONError, loads_untrusted
from .folders import Folders
from .options import ServerOptions
from .runtime import ServerRuntime
from .websocket import ClientHub
from .worker import PromptWorker
from .workers import WorkerPool


@dataclass
class ServerState:
    """Everything a handler may need: flags, nodes, executor, durable store, sockets, worker, folders."""

    options: ServerOptions
    registry: NodeRegistry
    executor: Executor
    store: PromptStore
    hub: ClientHub
    worker: PromptWorker | WorkerPool
    folders: Folders
    runtime: ServerRuntime
    started_at: float = field(default_factory=time.time)


STATE = web.AppKey("diffloom_state", ServerState)
OFF_LOOP_BYTES = 256 * 1024


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]


def error_response(status: int, kind: str, message: str, details: str = "", **extra: Any) -> web.Response:
    """An error in ComfyUI's shape: {"error": {type, message, details, extra_info}, "node_errors": {}}."""
    return web.json_response({"error": {"type": kind, "message": message, "details": details, "extra_info": extra},
                              "node_errors": {}}, status=status)


class BadRequest(Exception):
    """A request the client must fix; the handler answers 400 with this message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


async def json_body(request: web.Request, *, default: Any = None, allow_empty: bool = True) -> Any:
    """The request's JSON body; BadRequest if it is not JSON (an empty body gives `default`)."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return default
        raise BadRequest("invalid_json", "the request body is empty; send JSON")
    try:
        # Parsing megabytes takes long enough to stall every other client: do it off the loop.
        return loads_untrusted(raw) if len(raw) < OFF_LOOP_BYTES else await asyncio.to_thread(loads_untrusted, raw)
    except UntrustedJSONError as exc:
        raise BadRequest("invalid_json", f"the request body is not valid JSON: {exc}") from exc


def query_int(request: web.Request, name: str, default: int | None) -> int | None:
    """An integer query parameter, or BadRequest naming it."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest("invalid_query", f"query parameter {name!r} is {raw!r}, must be an integer") from None
