"""diffloom's HTTP and websocket server (ComfyUI's API), assembled by `server.py`.

This package imports aiohttp but never torch: the model runtime arrives as callables
(`ServerRuntime`), the folders as a `Folders` object (`nodes.folders.FolderPaths`) and the node
registry is built by the caller.

    app = create_app(options, registry, folders, runtime=ServerRuntime(...))
    asyncio.run(serve(app, options))              # or: with BackgroundServer(app) as s: ... s.url

Routes (each also under /api): POST/GET /prompt, GET/POST /queue, POST /interrupt, GET/POST /history,
GET /history/{id}, GET /object_info[/{class}], GET /view, POST /upload/image, POST /upload/mask,
POST /free, GET /system_stats, GET /models[/{folder}], GET /embeddings, GET /extensions, GET /features,
GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel, POST /jobs/cancel, POST /jobs/{id}/requeue,
POST /workflow/convert, GET /workflows[/{name}], GET /users, /settings[/{id}], /userdata..., GET /i18n,
and the websocket /ws?clientId=. The editor's files are served from the web root for every other GET.
"""
from __future__ import annotations

from .app import add_api_routes, create_app, serve
from .background import BackgroundServer
from .folders import Folders
from .options import ServerOptions, build_parser, parse_server_args
from .runtime import ServerRuntime
from .state import STATE, ServerState

__all__ = ["STATE", "BackgroundServer", "Folders", "ServerOptions", "ServerRuntime", "ServerState",
           "add_api_routes", "build_parser", "create_app", "parse_server_args", "serve"]
