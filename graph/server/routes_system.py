"""Node definitions, host and memory figures, model lists, feature flags: the routes an editor boots from."""
from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..files import PathEscapeError, confined_path
from .folders import list_files, model_keys, safetensors_metadata
from .state import ServerState, json_body, state_of

routes = web.RouteTableDef()
EMBEDDING_EXTENSIONS = frozenset({".safetensors", ".pt", ".bin", ".pth", ".ckpt"})


def diffloom_version() -> str:
    from .. import __version__  # noqa: PLC0415

    return __version__


def server_features(max_upload_size: int) -> dict[str, Any]:
    """What `GET /features` and the websocket's feature_flags reply announce."""
    return {"supports_preview_metadata": True, "max_upload_size": max_upload_size}


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(state_of(request).registry.object_info)
    return web.json_response(info)


@routes.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    registry = state_of(request).registry
    name = request.match_info["node_class"]
    if name not in registry:
        return web.json_response({})
    info = await asyncio.to_thread(registry[name].schema.object_info)
    return web.json_response({name: info})


def _memory() -> tuple[int, int]:
    try:
        import psutil  # noqa: PLC0415

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pages, free = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        return pages * size, free * size


def _call(fn: Any, default: Any) -> Any:
    if fn is None:
        return default
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a failing figure must not take the route down
        return {"error": f"{type(exc).__name__}: {exc}"} if isinstance(default, dict) else default


def system_stats(state: ServerState) -> dict[str, Any]:
    """ComfyUI's /system_stats, plus a `diffloom` section: cache, models, queue and worker."""
    ram_total, ram_free = _memory()
    version = diffloom_version()
    system = {"os": sys.platform, "ram_total": ram_total, "ram_free": ram_free, "comfyui_version": version,
              "diffloom_version": version, "required_frontend_version": "", "python_version": sys.version,
              "pytorch_version": "", "embedded_python": False, "argv": sys.argv,
              "platform": platform.platform()}
    system.update(_call(state.runtime.system_info, {}))
    devices = _call(state.runtime.devices, [])
    return {
        "system": system,
        "devices": devices,
        "diffloom": {
            "cache": state.executor.cache.stats(),
            "models": _call(state.runtime.model_stats, {}),
            "queue": {"queue_remaining": state.store.queue_remaining(), "database": str(state.store.path)},
            "worker": state.worker.status(),
            "uptime_seconds": round(time.time() - state.started_at, 1),
        },
    }


@routes.get("/system_stats")
async def get_system_stats(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(system_stats, state_of(request)))


@routes.post("/free")
async def free(request: web.Request) -> web.Response:
    """{"unload_models": bool, "free_memory": bool}: done between prompts (now, if none runs)."""
    body = await json_body(request, default={})
    body = body if isinstance(body, dict) else {}
    state_of(request).worker.request_free(bool(body.get("unload_models")), bool(body.get("free_memory")))
    return web.Response(status=200)


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).hub.server_features)


@routes.get("/models")
async def model_folders(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(model_keys, state_of(request).folders))


@routes.get("/models/{folder}")
async def model_files(request: web.Request) -> web.Response:
    folders = state_of(request).folders
    key = request.match_info["folder"]
    if key not in await asyncio.to_thread(model_keys, folders):
        raise web.HTTPNotFound(text=f"no model folder {key!r}")
    return web.json_response(await asyncio.to_thread(folders.get_filename_list, key))


@routes.get("/view_metadata/{folder}")
async def view_metadata(request: web.Request) -> web.Response:
    """The `__metadata__` of a listed .safetensors model file (read from its header only), or 404."""
    folders = state_of(request).folders
    key, name = request.match_info["folder"], request.query.get("filename", "")
    if not name.endswith(".safetensors") or key not in await asyncio.to_thread(model_keys, folders):
        raise web.HTTPNotFound(text=f"no .safetensors file {name!r} in model folder {key!r}")
    # Only names the folder lists are looked up, so nothing outside the model folders can be named.
    if name not in await asyncio.to_thread(folders.get_filename_list, key):
        raise web.HTTPNotFound(text=f"{key} {name!r} not found")
    path = await asyncio.to_thread(folders.get_full_path, key, name)
    metadata = await asyncio.to_thread(safetensors_metadata, Path(path)) if path else None
    if metadata is None:
        raise web.HTTPNotFound(text=f"{key} {name!r} has no readable safetensors metadata")
    return web.json_response(metadata)


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    folders = state_of(request).folders

    def names() -> list[str]:
        if "embeddings" not in folders.keys():
            return []
        files = folders.get_filename_list("embeddings")
        return sorted({f.rsplit(".", 1)[0] for f in files if Path(f).suffix.lower() in EMBEDDING_EXTENSIONS})

    return web.json_response(await asyncio.to_thread(names))


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    """URLs of the browser extensions plugins ship (their .js files under /extensions/<name>/)."""
    found: list[str] = []
    for name, folder in sorted(state_of(request).runtime.extensions.items()):
        for rel in list_files(Path(folder), frozenset({".js"})):
            found.append(f"/extensions/{name}/{rel}")
    return web.json_response(found)


async def extension_file(request: web.Request) -> web.StreamResponse:
    """GET /extensions/{name}/{path}: a file of a plugin's web folder (not mirrored under /api)."""
    folder = state_of(request).runtime.extensions.get(request.match_info["name"])
    if folder is None:
        raise web.HTTPNotFound()
    try:
        path = confined_path(folder, request.match_info["path"], what="extension file")
    except PathEscapeError as exc:
        raise web.HTTPForbidden(text=str(exc)) from exc
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)


@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    return web.json_response({})
