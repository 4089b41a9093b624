"""The ready workflows of the `workflows/` folder, listed and served for the editor to open.

- `GET /workflows` -> `{"workflows": [{"name": "txt2img.json", "size": 1234, "modified": 1700000000.0}, ...]}`,
  every `*.json` file of the folder and its sub-folders (names '/'-separated), sorted by name.
- `GET /workflows/{name}` -> that file's JSON; 400 for a name that is not a plain relative `.json`
  path, 403 if it leads outside the folder, 404 if there is no such file, 422 if it is not valid JSON.

Mount with `add_workflow_routes(app_or_routes, workflows_dir)`.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from ..files import PathEscapeError, PathOutsideError, confined_path


def list_workflows(folder: Path) -> list[dict[str, Any]]:
    """Every *.json below `folder` as {name, size, modified}, sorted by name; [] if the folder is missing."""
    if not folder.is_dir():
        return []
    root = folder.resolve()
    found = []
    for path in root.rglob("*.json"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        stat = path.stat()
        found.append({"name": path.relative_to(root).as_posix(), "size": stat.st_size, "modified": stat.st_mtime})
    return sorted(found, key=lambda item: item["name"].lower())


def read_workflow(folder: Path, name: str) -> Any:
    """The parsed JSON of workflow `name` (relative to `folder`); raises the HTTP error to answer with."""
    if not name.endswith(".json"):
        raise web.HTTPBadRequest(text=f"workflow {name!r}: only .json files are served")
    try:
        path = confined_path(folder, *name.split("/"), what="workflow")
    except PathOutsideError as exc:
        raise web.HTTPForbidden(text=str(exc)) from exc
    except PathEscapeError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    if not path.is_file():
        raise web.HTTPNotFound(text=f"workflow {name!r} is not in {folder}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise web.HTTPUnprocessableEntity(text=f"workflow {name!r} is not valid JSON: {exc}") from exc


def add_workflow_routes(app_or_routes: web.Application | web.RouteTableDef, workflows_dir: str | Path) -> None:
    """Register GET /workflows and GET /workflows/{name}.

    On a RouteTableDef the bare paths are added (the app mirrors its tables under /api); on an
    Application both `/workflows...` and `/api/workflows...` are registered.
    """
    folder = Path(workflows_dir)

    async def get_workflows(request: web.Request) -> web.Response:
        return web.json_response({"workflows": await asyncio.to_thread(list_workflows, folder)})

    async def get_workflow(request: web.Request) -> web.Response:
        data = await asyncio.to_thread(read_workflow, folder, request.match_info["name"])
        return web.json_response(data)

    if isinstance(app_or_routes, web.RouteTableDef):
        app_or_routes.get("/workflows")(get_workflows)
        app_or_routes.get("/workflows/{name:.+}")(get_workflow)
        return
    for prefix in ("", "/api"):
        app_or_routes.router.add_get(f"{prefix}/workflows", get_workflows)
        app_or_routes.router.add_get(f"{prefix}/workflows/{{name:.+}}", get_workflow)
