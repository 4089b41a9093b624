"""diffloom's HTTP and websocket server (ComfyUI's API), assembled by `server.py`.

This package imports aiohttp but never torch: the model runtime arrives as callables
(`ServerRuntime`) and the node registry is built by the caller.
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
