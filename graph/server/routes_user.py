"""The single-user data an editor keeps on the server: `/users`, `/settings`, `/userdata`.

Everything lives under `<user dir>/default/` (ComfyUI's layout without multi-user); every path is
confined to it. Writes are atomic.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from ..files import PathEscapeError, PathOutsideError, atomic_write, confined_path
from .folders import list_files
from .state import BadRequest, json_body, state_of

routes = web.RouteTableDef()
USER = "default"
SETTINGS_FILE = "comfy.settings.json"


def _user_root(request: web.Request) -> Path:
    root = Path(state_of(request).folders.user_dir) / USER
    root.mkdir(parents=True, exist_ok=True)
    return root


def _user_path(request: web.Request, relative: str) -> Path:
    try:
        path = confined_path(_user_root(request), relative, what="user file")
    except PathOutsideError as exc:
        raise web.HTTPForbidden(text=str(exc)) from exc
    except PathEscapeError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    if path == _user_root(request).resolve():
        raise web.HTTPBadRequest(text="a file name is required")
    return path


def _info(root: Path, path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": path.relative_to(root.resolve()).as_posix(), "size": stat.st_size,
            "modified": stat.st_mtime, "created": stat.st_ctime}


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    return web.json_response({"storage": "server", "migrated": True})


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    return web.json_response(USER)


def _read_settings(request: web.Request) -> dict[str, Any]:
    path = _user_root(request) / SETTINGS_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_settings(request: web.Request, settings: dict[str, Any]) -> None:
    atomic_write(_user_root(request) / SETTINGS_FILE, json.dumps(settings, indent=2))


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(_read_settings(request))


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    body = await json_body(request, default={})
    if not isinstance(body, dict):
        raise BadRequest("invalid_settings", "settings must be a JSON object")
    _write_settings(request, {**_read_settings(request), **body})
    return web.Response(status=200)


@routes.get("/settings/{setting_id}")
async def get_setting(request: web.Request) -> web.Response:
    return web.json_response(_read_settings(request).get(request.match_info["setting_id"]))


@routes.post("/settings/{setting_id}")
async def post_setting(request: web.Request) -> web.Response:
    value = await json_body(request, default=None)
    settings = _read_settings(request)
    settings[request.match_info["setting_id"]] = value
    _write_settings(request, settings)
    return web.Response(status=200)


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    return default if raw is None else raw.lower() in ("true", "1", "yes")


@routes.get("/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    """?dir=workflows&recurse=true&full_info=false&split=false: files under a user folder (404 if missing)."""
    root = _user_root(request)
    folder = _user_path(request, request.query.get("dir", "")) if request.query.get("dir") else root.resolve()
    if not folder.is_dir():
        raise web.HTTPNotFound(text=f"no user folder {request.query.get('dir', '')!r}")
    files = list_files(folder) if _flag(request, "recurse") else sorted(
        p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if _flag(request, "full_info"):
        return web.json_response([{**_info(folder, folder / f), "path": f} for f in files])
    if _flag(request, "split"):
        return web.json_response([[f, *f.split("/")] for f in files])
    return web.json_response(files)


@routes.get("/v2/userdata")
async def list_userdata_v2(request: web.Request) -> web.Response:
    """?path=sub/folder: one level, folders and files."""
    root = _user_root(request).resolve()
    folder = _user_path(request, request.query["path"]) if request.query.get("path") else root
    if not folder.is_dir():
        raise web.HTTPNotFound(text=f"no user folder {request.query.get('path', '')!r}")
    entries = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        rel = child.relative_to(root).as_posix()
        if child.is_dir():
            entries.append({"name": child.name, "path": rel, "type": "directory"})
        else:
            stat = child.stat()
            entries.append({"name": child.name, "path": rel, "type": "file", "size": stat.st_size,
                            "modified": stat.st_mtime})
    return web.json_response(entries)


@routes.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.StreamResponse:
    path = _user_path(request, request.match_info["file"])
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no user file {request.match_info['file']!r}")
    return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff",
                                           "Content-Security-Policy": "default-src 'none'; sandbox"})


@routes.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    path = _user_path(request, request.match_info["file"])
    if path.exists() and not _flag(request, "overwrite", True):
        return web.json_response({"error": f"user file {request.match_info['file']!r} exists"}, status=409)
    data = await request.read()
    await asyncio.to_thread(atomic_write, path, data)
    root = _user_root(request)
    if _flag(request, "full_info"):
        return web.json_response(_info(root, path))
    return web.json_response(path.relative_to(root.resolve()).as_posix())


@routes.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    path = _user_path(request, request.match_info["file"])
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no user file {request.match_info['file']!r}")
    path.unlink()
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    source = _user_path(request, request.match_info["file"])
    dest = _user_path(request, request.match_info["dest"])
    if not source.is_file():
        raise web.HTTPNotFound(text=f"no user file {request.match_info['file']!r}")
    if dest.exists() and not _flag(request, "overwrite", True):
        return web.json_response({"error": f"user file {request.match_info['dest']!r} exists"}, status=409)
    dest.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.move, source, dest)
    root = _user_root(request)
    if _flag(request, "full_info"):
        return web.json_response(_info(root, dest))
    return web.json_response(os.path.relpath(dest, root.resolve()).replace(os.sep, "/"))
