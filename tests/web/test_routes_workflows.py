"""GET /workflows and /workflows/{name} (graph/server/routes_workflows.py) on a real aiohttp app over loopback."""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from graph.server.routes_workflows import add_workflow_routes, list_workflows


def make_folder(root: Path) -> Path:
    folder = root / "workflows"
    (folder / "sdxl").mkdir(parents=True)
    (folder / "txt2img.json").write_text(json.dumps({"3": {"class_type": "KSampler", "inputs": {}}}))
    (folder / "sdxl" / "base.json").write_text(json.dumps({"nodes": [], "links": []}))
    (folder / "broken.json").write_text("{not json")
    (folder / "notes.txt").write_text("not a workflow")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "secret.json").write_text("{}")
    (root / "outside.json").write_text("{}")
    return folder


def fetch(target: web.Application | web.RouteTableDef, folder: Path, paths: list[str]) -> list[tuple[int, Any]]:
    """GET each path from an app serving `folder`; in a thread of its own, as the browser tests hold this one's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _fetch(target, folder, paths)).result()


async def _fetch(target: web.Application | web.RouteTableDef, folder: Path, paths: list[str]) -> list[tuple[int, Any]]:
    if isinstance(target, web.RouteTableDef):
        app = web.Application()
        add_workflow_routes(target, folder)
        app.router.add_routes(target)
    else:
        app = target
        add_workflow_routes(app, folder)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        answers = []
        for path in paths:
            response = await client.get(path)
            text = await response.text()
            answers.append((response.status, json.loads(text) if response.content_type == "application/json" else text))
        return answers


def test_lists_json_files_with_subfolders_sorted_and_serves_them(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    listing, one, nested, api_listing = fetch(web.Application(), folder, [
        "/workflows", "/workflows/txt2img.json", "/workflows/sdxl/base.json", "/api/workflows"])
    assert listing[0] == 200
    assert [w["name"] for w in listing[1]["workflows"]] == ["broken.json", "sdxl/base.json", "txt2img.json"]
    assert all(w["size"] > 0 and w["modified"] > 0 for w in listing[1]["workflows"])
    assert one == (200, {"3": {"class_type": "KSampler", "inputs": {}}})
    assert nested == (200, {"nodes": [], "links": []})
    assert api_listing == listing


def test_refuses_escapes_other_files_and_reports_missing_and_invalid(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    answers = fetch(web.Application(), folder, [
        "/workflows/notes.txt", "/workflows/..%2Foutside.json", "/workflows/missing.json", "/workflows/broken.json"])
    statuses = [status for status, _ in answers]
    assert statuses == [400, 400, 404, 422]
    assert "only .json files" in answers[0][1]
    assert "missing.json" in answers[2][1]
    assert "not valid JSON" in answers[3][1]


def test_route_table_gets_bare_paths_and_a_missing_folder_lists_nothing(tmp_path: Path) -> None:
    answers = fetch(web.RouteTableDef(), tmp_path / "nowhere", ["/workflows", "/api/workflows"])
    assert answers[0] == (200, {"workflows": []})
    assert answers[1][0] == 404  # the app that owns the table mirrors it under /api, not this function
    assert list_workflows(tmp_path / "nowhere") == []
