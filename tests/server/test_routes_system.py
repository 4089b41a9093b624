"""object_info, system_stats, free, models, embeddings, extensions, features, jobs, user data, the editor page."""
from __future__ import annotations

import os
import urllib.parse
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from graph.registry import NodeRegistry
from graph.server import BackgroundServer, ServerOptions, create_app
from nodes.folders import FolderPaths
from tests.server.server_harness import ServerProcess, http, image_prompt, wait_until

MIRRORED_GETS = ["/object_info", "/object_info/TestSlow", "/models", "/models/checkpoints", "/embeddings",
                 "/extensions", "/features", "/queue", "/prompt", "/history?max_items=1", "/users", "/settings",
                 "/i18n", "/jobs?limit=1"]


@pytest.mark.parametrize("path", MIRRORED_GETS)
def test_routes_answer_bare_and_under_api(server: ServerProcess, path: str) -> None:
    bare, api = server.get(path), server.get("/api" + path)
    assert bare.status == api.status == 200, (bare.body, api.body)
    assert bare.headers["Content-Type"].startswith("application/json")


def test_object_info(server: ServerProcess) -> None:
    info = server.get("/object_info").json()
    assert set(info) == {"TestImage", "TestSlow", "TestFail", "TestSave", "TestShow"}
    slow = info["TestSlow"]
    assert slow["input"]["required"]["steps"] == ["INT", {"default": 4, "min": 1, "max": 10000, "step": 1}]
    assert slow["input"]["required"]["images"] == ["IMAGE"]
    assert slow["output"] == ["IMAGE"] and slow["output_node"] is False and slow["category"] == "test"
    assert info["TestSave"]["input"]["required"]["kind"] == [["output", "temp"], {"default": "output"}]
    assert server.get("/api/object_info/TestSave").json() == {"TestSave": info["TestSave"]}
    assert server.get("/object_info/NoSuchNode").json() == {}


def test_system_stats_has_comfyui_fields_and_our_figures(server: ServerProcess) -> None:
    server.wait_history(server.queue(image_prompt(value=0.91, prefix="stats")))
    stats = server.get("/system_stats").json()
    system = stats["system"]
    for key in ("os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version",
                "embedded_python", "argv"):
        assert key in system
    assert system["ram_total"] > system["ram_free"] > 0
    assert isinstance(stats["devices"], list)
    ours = stats["diffloom"]
    assert ours["cache"]["mode"] == "lru" and ours["cache"]["entries"] >= 3 and ours["cache"]["bytes"] > 0
    assert ours["cache"]["max_bytes"] == 2 << 30
    assert ours["worker"]["alive"] is True and ours["queue"]["database"].endswith("diffloom.db")


def test_free_empties_the_output_cache(server: ServerProcess) -> None:
    server.wait_history(server.queue(image_prompt(value=0.92, prefix="free")))
    assert server.get("/system_stats").json()["diffloom"]["cache"]["entries"] > 0
    assert server.post("/api/free", {"unload_models": True, "free_memory": True}).status == 200
    wait_until(lambda: server.get("/system_stats").json()["diffloom"]["cache"]["entries"] == 0,
               what="an empty cache")
    # nothing cached any more: the same prompt runs every node again
    entry = server.wait_history(server.queue(image_prompt(value=0.92, prefix="free")))
    assert entry["status"]["messages"][1][1]["nodes"] == []
    assert server.post("/free", {"unload_models": False}).status == 200


def test_models_and_embeddings(server: ServerProcess) -> None:
    (server.base / "models" / "checkpoints" / "sub").mkdir(parents=True, exist_ok=True)
    (server.base / "models" / "checkpoints" / "sub" / "tiny.safetensors").write_bytes(b"x")
    (server.base / "models" / "checkpoints" / "notes.txt").write_text("not a model")
    (server.base / "models" / "embeddings" / "style.pt").write_bytes(b"x")
    keys = server.get("/models").json()
    assert {"checkpoints", "loras", "vae", "embeddings", "controlnet"} <= set(keys)
    assert "custom_nodes" not in keys
    assert server.get("/models/checkpoints").json() == ["sub/tiny.safetensors"]
    assert server.get("/api/models/nope").status == 404
    assert server.get("/embeddings").json() == ["style"]


def test_view_metadata_reads_the_safetensors_header_of_listed_files_only(server: ServerProcess) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    checkpoints = server.base / "models" / "checkpoints"
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(checkpoints / "meta.safetensors"),
              metadata={"modelspec.resolution": "64x64", "modelspec.title": "tiny"})
    (checkpoints / "broken.safetensors").write_bytes(b"\xff" * 16)
    (server.base / "secret.safetensors").write_bytes((checkpoints / "meta.safetensors").read_bytes())
    assert server.get("/view_metadata/checkpoints?filename=meta.safetensors").json() == {
        "modelspec.resolution": "64x64", "modelspec.title": "tiny"}
    assert server.get("/api/view_metadata/checkpoints?filename=meta.safetensors").status == 200
    for query in ("checkpoints?filename=broken.safetensors", "checkpoints?filename=missing.safetensors",
                  "checkpoints?filename=../../secret.safetensors", "checkpoints?filename=notes.txt",
                  "nope?filename=meta.safetensors", "checkpoints"):
        assert server.get("/view_metadata/" + query).status == 404, query


def test_features_extensions_and_index(server: ServerProcess) -> None:
    assert server.get("/features").json() == {"supports_preview_metadata": True, "max_upload_size": 1024 * 1024}
    assert server.get("/extensions").json() == []
    page = server.get("/")
    assert page.status == 200 and b"diffloom" in page.body and page.headers["Cache-Control"] == "no-cache"
    assert server.get("/extensions/none/x.js").status == 404


def test_jobs_list_detail_cancel_and_requeue(server: ServerProcess) -> None:
    blocker = server.queue(image_prompt(value=0.93, steps=400, delay=0.05))
    wait_until(lambda: server.get(f"/api/jobs/{blocker}").json()["status"] == "in_progress", what="running job")
    pending = server.queue(image_prompt(value=0.94))
    jobs = server.get("/api/jobs?status=pending,in_progress&sort_order=asc").json()
    assert [j["id"] for j in jobs["jobs"]] == [blocker, pending]
    assert jobs["pagination"] == {"offset": 0, "limit": None, "total": 2, "has_more": False}
    page = server.get("/api/jobs?status=pending,in_progress&limit=1").json()
    assert len(page["jobs"]) == 1 and page["pagination"]["has_more"] is True
    assert server.get("/api/jobs?status=bogus").status == 400
    detail = server.get(f"/api/jobs/{pending}").json()
    assert detail["status"] == "pending" and detail["workflow"]["prompt"]["1"]["class_type"] == "TestImage"
    assert server.get(f"/api/jobs/{uuid.uuid4()}").status == 404
    assert server.post(f"/api/jobs/{pending}/cancel").json() == {"cancelled": True}
    assert server.get(f"/api/jobs/{pending}").json()["status"] == "cancelled"
    assert server.post("/api/jobs/cancel", {"job_ids": [blocker]}).json() == {"cancelled": True}
    entry = server.wait_history(blocker)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert server.get(f"/api/jobs/{blocker}").json()["status"] == "cancelled"
    # an interrupted (here: cancelled while running) job can be queued again; stop the long re-run at once
    requeued = server.post(f"/api/jobs/{blocker}/requeue")
    assert requeued.status == 200 and requeued.json()["requeued"] is True
    wait_until(lambda: server.get(f"/api/jobs/{blocker}").json()["status"] == "in_progress", what="re-run started")
    assert server.post(f"/api/jobs/{blocker}/cancel").json() == {"cancelled": True}
    wait_until(lambda: server.get(f"/api/jobs/{blocker}").json()["status"] == "cancelled", what="re-run stopped")
    finished = server.get(f"/api/jobs/{pending}").json()
    assert server.post(f"/api/jobs/{pending}/requeue").status == 409 and finished["status"] == "cancelled"
    assert server.post(f"/api/jobs/{uuid.uuid4()}/requeue").status == 404
    assert server.post("/api/jobs/cancel", {"job_ids": "nope"}).status == 400


def test_requeued_interrupted_job_completes(server: ServerProcess) -> None:
    job = server.queue(image_prompt(value=0.95, steps=20, delay=0.05, prefix="again"))
    wait_until(lambda: server.get(f"/api/jobs/{job}").json()["status"] == "in_progress", what="running job")
    server.post("/interrupt", {"prompt_id": job})
    assert server.wait_history(job)["status"]["status_str"] == "error"
    assert server.post(f"/jobs/{job}/requeue").status == 200
    wait_until(lambda: server.get(f"/api/jobs/{job}").json()["status"] == "completed", timeout=60,
               what="re-queued job completed")
    assert server.get(f"/history/{job}").json()[job]["outputs"]["3"]["images"][0]["filename"].startswith("again_")


def test_settings_and_users(server: ServerProcess) -> None:
    assert server.get("/users").json() == {"storage": "server", "migrated": True}
    assert server.post("/settings", {"Comfy.A": 1, "Comfy.B": "x"}).status == 200
    assert server.post("/api/settings/Comfy.C", [1, 2]).status == 200
    assert server.get("/settings").json() == {"Comfy.A": 1, "Comfy.B": "x", "Comfy.C": [1, 2]}
    assert server.get("/settings/Comfy.B").json() == "x"
    assert server.get("/settings/Missing").json() is None


def userdata(path: str) -> str:
    return "/api/userdata/" + urllib.parse.quote(path, safe="")


def test_userdata_roundtrip(server: ServerProcess) -> None:
    assert server.get("/userdata?dir=workflows").status == 404
    saved = http("POST", server.url + userdata("workflows/a.json"), data=b'{"nodes": []}')
    assert saved.status == 200 and saved.json() == "workflows/a.json"
    assert server.get(userdata("workflows/a.json")).body == b'{"nodes": []}'
    assert http("POST", server.url + userdata("workflows/a.json") + "?overwrite=false", data=b"{}").status == 409
    assert server.get("/userdata?dir=workflows&recurse=true").json() == ["a.json"]
    full = server.get("/userdata?dir=workflows&recurse=true&full_info=true").json()
    assert full[0]["path"] == "a.json" and full[0]["size"] == 13
    tree = server.get("/api/v2/userdata").json()
    assert {"name": "workflows", "path": "workflows", "type": "directory"} in tree
    moved = http("POST", server.url + userdata("workflows/a.json") + "/move/" +
                 urllib.parse.quote("workflows/b.json", safe=""))
    assert moved.status == 200 and moved.json() == "workflows/b.json"
    assert server.get(userdata("workflows/a.json")).status == 404
    assert http("DELETE", server.url + userdata("workflows/b.json")).status == 204
    assert server.get("/userdata?dir=workflows").json() == []


@pytest.mark.parametrize("name", ["../diffloom.db", "..\\diffloom.db", "/etc/passwd", "a/../../diffloom.db"])
def test_userdata_refuses_traversal(server: ServerProcess, name: str) -> None:
    assert server.get(userdata(name)).status == 400
    assert http("POST", server.url + userdata(name), data=b"x").status == 400
    assert server.get("/userdata?" + urllib.parse.urlencode({"dir": name})).status == 400
    assert (server.base / "user" / "diffloom.db").read_bytes()[:6] == b"SQLite"


def test_editor_files_are_served_without_shadowing_later_routes(tmp_path: Path) -> None:
    web_root = tmp_path / "web"
    (web_root / "assets").mkdir(parents=True)
    (web_root / "index.html").write_text("<html>editor</html>")
    (web_root / "assets" / "app.js").write_text("console.log(1)")
    os.symlink(tmp_path / "user", web_root / "leak")
    folders = FolderPaths(tmp_path, create_dirs=True)
    app = create_app(ServerOptions(base_directory=tmp_path, front_end_root=web_root), NodeRegistry(), folders)

    async def late(request: web.Request) -> web.Response:
        return web.json_response({"late": True})

    app.router.add_get("/assets/late", late)  # added after create_app, as plugin routes are
    with BackgroundServer(app) as running:
        index = http("GET", running.url + "/")
        assert index.body == b"<html>editor</html>" and index.headers["Cache-Control"] == "no-cache"
        script = http("GET", running.url + "/assets/app.js")
        assert script.body == b"console.log(1)" and script.headers["Cache-Control"] == "no-cache"
        assert http("GET", running.url + "/assets/late").json() == {"late": True}
        assert http("GET", running.url + "/assets/missing.js").status == 404
        assert http("GET", running.url + "/leak/diffloom.db").status == 404
        assert http("GET", running.url + "/%2e%2e/user/diffloom.db").status == 404
        assert http("POST", running.url + "/assets/app.js").status in (404, 405)


def test_ready_workflows_are_listed_and_served(server: ServerProcess) -> None:
    folder = server.base / "workflows"
    (folder / "more").mkdir(parents=True, exist_ok=True)
    (folder / "txt2img.json").write_text('{"1": {"class_type": "TestImage", "inputs": {}}}')
    (folder / "more" / "b.json").write_text("{}")
    listing = server.get("/api/workflows").json()["workflows"]
    assert [w["name"] for w in listing] == ["more/b.json", "txt2img.json"]
    assert server.get("/workflows/txt2img.json").json()["1"]["class_type"] == "TestImage"
    assert server.get("/api/workflows/more/b.json").json() == {}
    assert server.get("/api/workflows/..%2Fuser%2Fdiffloom.db").status in (400, 404)
    assert server.get("/api/workflows/nope.json").status == 404
