"""The aiohttp application: `create_app(options, registry, ...)` assembles state, routes and the worker.

Every API route is registered twice, at `/X` and at `/api/X`, as ComfyUI does; the editor's static
files are served from the web root at `/`. The worker thread, crash recovery of the durable queue
and the websocket hub live in a cleanup context, so they start and stop with the app. `serve()`
runs an app on the listen addresses until SIGINT/SIGTERM.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..cache import OutputCache
from ..executor import Executor
from ..files import PathEscapeError, confined_path
from ..prompt_store import PENDING, PromptStore
from ..registry import NodeRegistry
from . import jobs, routes_files, routes_prompt, routes_system, routes_user
from .folders import Folders
from .options import ServerOptions
from .routes_system import extension_file, server_features
from .routes_workflows import add_workflow_routes
from .runtime import ServerRuntime
from .security import cache_control_middleware, cors_middleware, origin_middleware, token_middleware
from .state import STATE, BadRequest, ServerState, error_response
from .websocket import ClientHub
from .worker import PromptWorker
from .workers import WorkerPool, build_pool, wants_pool

log = logging.getLogger("diffloom.server")

ROUTE_TABLES = (routes_prompt.routes, routes_files.routes, routes_system.routes, routes_user.routes, jobs.routes)
# Multipart framing around an upload of exactly --max-upload-size must still fit.
MULTIPART_SLACK = 64 * 1024

FALLBACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>diffloom</title></head>
<body><h1>diffloom</h1>
<p>The server runs; the editor is not installed in its web folder.</p>
<p>API: <a href="/api/object_info">/api/object_info</a>, <a href="/api/queue">/api/queue</a>,
<a href="/api/history">/api/history</a>, <a href="/api/system_stats">/api/system_stats</a>;
websocket at <code>/ws</code>.</p></body></html>
"""


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """BadRequest -> 400 in ComfyUI's error shape; unexpected errors -> 500 with the reason, logged."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_response(400, exc.kind, str(exc))
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # noqa: BLE001 - a failing handler must answer, not hang the client
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "server_error", f"{type(exc).__name__}: {exc}")


def static_middleware(web_root: Path) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Serve the editor's files (web root) for GET paths that no route claims."""

    @web.middleware
    async def static_files(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        missing = getattr(request.match_info, "http_exception", None)
        if missing is not None and missing.status == 404 and request.method in ("GET", "HEAD"):
            relative = request.path.lstrip("/")
            if any(part.startswith(".") for part in relative.split("/")):
                raise web.HTTPNotFound()  # no dot-files (.git, .env) from the web root
            try:
                path = confined_path(web_root, relative, what="web file")
            except PathEscapeError:
                raise web.HTTPNotFound() from None
            if path.is_file():
                return web.FileResponse(path)
        return await handler(request)

    return static_files


def add_api_routes(app: web.Application, table: web.RouteTableDef) -> None:
    """Register each route at its path and again under /api."""
    for route in table:
        assert isinstance(route, web.RouteDef)
        for prefix in ("", "/api"):
            app.router.add_route(route.method, prefix + route.path, route.handler, **route.kwargs)


def _index_handler(web_root: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def index(request: web.Request) -> web.StreamResponse:
        page = web_root / "index.html"
        if page.is_file():
            return web.FileResponse(page, headers={"Cache-Control": "no-cache"})
        return web.Response(text=FALLBACK_PAGE, content_type="text/html", headers={"Cache-Control": "no-cache"})

    return index


def create_app(options: ServerOptions, registry: NodeRegistry, folders: Folders, *,
               runtime: ServerRuntime | None = None, executor: Executor | None = None,
               store: PromptStore | None = None, worker_id: str = "local",
               worker_setup: str | None = None) -> web.Application:
    """The diffloom app: routes, websocket, durable queue and a worker thread (started with the app).

    With --devices or --ray-address in the options, a pool of worker processes or Ray actors runs
    the prompts instead; each builds its nodes and models with `worker_setup` ('module:function').

    More routes (plugins') may be added until the app starts: the editor's files are served only
    for paths no route claims, so a late route is never shadowed by the web root.
    """
    runtime = runtime or ServerRuntime()
    if executor is None:
        executor = Executor(registry, OutputCache(options.cache_mode, options.cache_max_bytes,
                                                  options.cache_max_entries))
    if runtime.on_out_of_memory is not None:
        executor.oom_hooks.append(runtime.on_out_of_memory)
    store = store or PromptStore(options.database_path, max_history=options.history_max)
    hub = ClientHub(server_features=server_features(options.max_upload_size))
    worker: PromptWorker | WorkerPool
    if wants_pool(options):
        worker = build_pool(options, store, hub, worker_setup)
    else:
        worker = PromptWorker(store, executor, hub, worker_id=worker_id, preview_size=options.preview_size,
                              free_models=runtime.free_models, warm_up=runtime.warm_up)
    hub.queue_remaining = store.queue_remaining
    hub.now_executing = worker.now_executing

    middlewares: list[Any] = []
    if options.enable_cors_header:
        middlewares.append(cors_middleware(options.enable_cors_header))
    else:
        middlewares.append(origin_middleware(loopback_only=options.listens_on_loopback_only()))
    if options.auth_token:
        middlewares.append(token_middleware(options.auth_token))
    elif not options.listens_on_loopback_only():
        log.warning("!" * 78)
        log.warning("diffloom listens on %s WITHOUT a token: anyone who can reach this machine can queue "
                    "prompts, read outputs and upload files. Use --auth-token (or DIFFLOOM_AUTH_TOKEN).",
                    ", ".join(options.listen))
        log.warning("!" * 78)
    middlewares += [error_middleware, cache_control_middleware(), static_middleware(options.web_root)]

    app = web.Application(middlewares=middlewares, client_max_size=options.max_upload_size + MULTIPART_SLACK)
    app[STATE] = ServerState(options=options, registry=registry, executor=executor, store=store, hub=hub,
                             worker=worker, folders=folders, runtime=runtime)
    for table in ROUTE_TABLES:
        add_api_routes(app, table)
    for prefix in ("", "/api"):
        app.router.add_get(prefix + "/ws", hub.handle)
    app.router.add_get("/extensions/{name}/{path:.+}", extension_file)
    add_workflow_routes(app, options.workflows_dir)
    app.router.add_get("/", _index_handler(options.web_root))
    app.cleanup_ctx.append(_worker_context)
    app.on_shutdown.append(_close_sockets)
    return app


async def _worker_context(app: web.Application) -> AsyncIterator[None]:
    """Recover the queue after a crash, run the worker while the app runs, then stop it and close the store."""
    state = app[STATE]
    state.hub.loop = asyncio.get_running_loop()
    recovered = await asyncio.to_thread(state.store.recover_after_crash,
                                        requeue=state.options.requeue_on_crash, max_auto_retries=1)
    for item in recovered:
        verdict = "re-queued" if item.status == PENDING else "marked interrupted (POST /api/jobs/{id}/requeue runs it again)"
        log.warning("prompt %s was running when the server stopped: %s", item.prompt_id, verdict)
    pending = state.store.queue_remaining()
    if pending:
        log.info("%d prompt(s) waiting in the queue from before", pending)
    await asyncio.to_thread(state.worker.start)  # a pool on Ray joins the cluster first (seconds)
    try:
        yield
    finally:
        await asyncio.to_thread(state.worker.stop)
        state.store.close()


async def _close_sockets(app: web.Application) -> None:
    await app[STATE].hub.close_all()


async def serve(app: web.Application, options: ServerOptions,
                on_ready: Callable[[list[str]], None] | None = None) -> None:
    """Serve app on every --listen address until SIGINT or SIGTERM."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        for host in options.listen:
            await web.TCPSite(runner, host, options.port).start()
        urls = []
        for address in runner.addresses:
            host, port = address[0], address[1]
            urls.append(f"http://{'[' + host + ']' if ':' in host else host}:{port}")
        log.info("diffloom serving at %s", ", ".join(urls))
        if on_ready is not None:
            on_ready(urls)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        await stop.wait()
        log.info("diffloom stopping")
    finally:
        await runner.cleanup()
