"""POST/GET /prompt, /queue, /interrupt, /history and /workflow/convert on a real server process."""
from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest

from tests.server.server_harness import ServerProcess, Socket, image_prompt, ui_workflow, wait_until


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def connect(session: aiohttp.ClientSession, server: ServerProcess, client_id: str | None = None) -> tuple[Socket, str]:
    url = server.ws_url + (f"?clientId={client_id}" if client_id else "")
    sock = Socket(await session.ws_connect(url))
    kind, data = await sock.next_event()
    assert kind == "status"
    return sock, data["sid"]


def test_prompt_runs_with_events_in_comfyui_order(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock, sid = await connect(session, server)
            prompt_id = server.queue(image_prompt(value=0.25, steps=3, prefix="order"), client_id=sid)
            events = await sock.until_done(prompt_id)
            kinds = [k for k, _ in events]
            assert kinds[0] == "execution_start"
            assert kinds[1] == "execution_cached"
            executing = [d["node"] for k, d in events if k == "executing"]
            assert executing == ["1", "2", "3", None]
            progress = [(d["value"], d["max"], d["node"]) for k, d in events if k == "progress"]
            assert progress == [(1, 3, "2"), (2, 3, "2"), (3, 3, "2")]
            executed = [d for k, d in events if k == "executed"]
            assert [d["node"] for d in executed] == ["3"]
            image = executed[0]["output"]["images"][0]
            assert image["type"] == "output" and image["filename"].startswith("order_")
            assert kinds.index("execution_success") < len(kinds) - 1 and kinds[-1] == "executing"
            # status with the queue count comes between success and the final executing null
            tail = [(k, d) for k, d in sock.events if k in ("status", "execution_success", "executing")][-3:]
            assert [k for k, _ in tail] == ["execution_success", "status", "executing"]
            assert tail[1][1]["status"]["exec_info"]["queue_remaining"] >= 0
            states = [d for k, d in events if k == "progress_state"]
            assert states and states[-1]["nodes"]["3"]["state"] == "finished"
            await sock.ws.close()
        entry = server.wait_history(prompt_id)
        assert entry["status"] == {"status_str": "success", "completed": True, "messages": entry["status"]["messages"]}
        assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
        assert entry["outputs"]["3"]["images"][0] == image
        assert entry["prompt"][1] == prompt_id and entry["prompt"][2]["2"]["class_type"] == "TestSlow"
        assert entry["prompt"][3]["client_id"] == sid and entry["prompt"][4] == ["3"]
        assert entry["meta"]["3"]["node_id"] == "3"
        view = server.get(f"/view?filename={image['filename']}&type=output")
        assert view.status == 200 and view.body.startswith(b"\x89PNG")

    run(scenario())


def test_second_identical_prompt_is_reported_cached(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock, sid = await connect(session, server)
            prompt = image_prompt(value=0.61, prefix="cached")
            first = await sock.until_done(server.queue(prompt, client_id=sid))
            assert next(d for k, d in first if k == "execution_cached")["nodes"] == []
            second_id = server.queue(prompt, client_id=sid)
            second = await sock.until_done(second_id)
            cached = next(d for k, d in second if k == "execution_cached")
            # every node of the prompt is reported cached, also those upstream of the reused output
            assert sorted(cached["nodes"]) == ["1", "2", "3"]
            assert [d["node"] for k, d in second if k == "executing"] == [None]
            # the cached output node's result is replayed to the client
            assert [d["node"] for k, d in second if k == "executed"] == ["3"]
            # a changed widget re-runs only what depends on it
            changed = image_prompt(value=0.61, prefix="cached2")
            third = await sock.until_done(server.queue(changed, client_id=sid))
            assert sorted(next(d for k, d in third if k == "execution_cached")["nodes"]) == ["1", "2"]
            assert [d["node"] for k, d in third if k == "executing"] == ["3", None]
            await sock.ws.close()

    run(scenario())


def test_validation_errors_are_400_with_node_errors(server: ServerProcess) -> None:
    prompt = image_prompt()
    prompt["2"]["inputs"]["steps"] = 0
    del prompt["3"]["inputs"]["filename_prefix"]
    reply = server.post("/prompt", {"prompt": prompt})
    assert reply.status == 400
    body = reply.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"2", "3"}
    steps = body["node_errors"]["2"]
    assert steps["class_type"] == "TestSlow" and steps["dependent_outputs"] == ["3"]
    assert steps["errors"][0]["type"] == "value_smaller_than_min"
    assert "input 'steps' is 0, must be >= 1" in steps["errors"][0]["details"]
    assert body["node_errors"]["3"]["errors"][0]["type"] == "required_input_missing"


@pytest.mark.parametrize("body, kind", [
    ({}, "no_prompt"),
    ({"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}, "invalid_prompt"),
    ({"prompt": {"1": {"class_type": "TestImage", "inputs": {"width": 8, "height": 8, "value": 0.1}}}},
     "prompt_no_outputs"),
    ({"prompt": image_prompt(), "prompt_id": "not-a-uuid"}, "invalid_prompt_id"),
    ({"prompt": image_prompt(), "partial_execution_targets": []}, "prompt_no_outputs"),
])
def test_refused_prompts_name_the_reason(server: ServerProcess, body: dict[str, Any], kind: str) -> None:
    reply = server.post("/api/prompt", body)
    assert reply.status == 400
    assert reply.json()["error"]["type"] == kind
    assert "node_errors" in reply.json()


def test_bad_json_is_400(server: ServerProcess) -> None:
    reply = server.post("/prompt", data=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_json"


def test_client_prompt_id_and_duplicate(server: ServerProcess) -> None:
    prompt_id = str(uuid.uuid4())
    reply = server.post("/prompt", {"prompt": image_prompt(prefix="dup"), "prompt_id": prompt_id})
    assert reply.status == 200 and reply.json()["prompt_id"] == prompt_id
    assert reply.json()["node_errors"] == {} and isinstance(reply.json()["number"], int)
    again = server.post("/prompt", {"prompt": image_prompt(prefix="dup"), "prompt_id": prompt_id})
    assert again.status == 409
    server.wait_history(prompt_id)


def test_partial_execution_targets_run_only_that_output(server: ServerProcess) -> None:
    prompt = image_prompt(value=0.33, prefix="partial")
    prompt["5"] = {"class_type": "TestShow", "inputs": {"images": ["1", 0]}}
    reply = server.post("/prompt", {"prompt": prompt, "partial_execution_targets": ["5"]})
    assert reply.status == 200
    entry = server.wait_history(reply.json()["prompt_id"])
    assert list(entry["outputs"]) == ["5"] and entry["outputs"]["5"]["text"] == ["[1, 8, 8, 3]"]


def test_node_failure_sends_execution_error_and_records_it(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock, sid = await connect(session, server)
            prompt_id = server.queue(image_prompt(value=0.7, fail=True), client_id=sid)
            events = await sock.until_done(prompt_id)
            kinds = [k for k, _ in events]
            assert "execution_success" not in kinds
            error = next(d for k, d in events if k == "execution_error")
            assert error["node_id"] == "4" and error["node_type"] == "TestFail"
            assert error["exception_message"] == "planned failure" and error["exception_type"] == "RuntimeError"
            assert error["executed"] == ["1", "2"] and isinstance(error["traceback"], list)
            assert "images" in error["current_inputs"]
            assert kinds[-1] == "executing"
            await sock.ws.close()
        entry = server.wait_history(prompt_id)
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        assert entry["status"]["messages"][-1][0] == "execution_error"

    run(scenario())


def test_interrupt_stops_the_running_prompt(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock, sid = await connect(session, server)
            prompt_id = server.queue(image_prompt(value=0.11, steps=400, delay=0.05), client_id=sid)
            await sock.until(lambda k, d: k == "progress" and d.get("prompt_id") == prompt_id)
            # an interrupt naming another prompt leaves this one running
            assert server.post("/interrupt", {"prompt_id": str(uuid.uuid4())}).status == 200
            await sock.until(lambda k, d: k == "progress" and d.get("prompt_id") == prompt_id and d["value"] >= 3)
            assert server.post("/api/interrupt", {"prompt_id": prompt_id}).status == 200
            events = await sock.until_done(prompt_id, timeout=20)
            interrupted = next(d for k, d in events if k == "execution_interrupted")
            assert interrupted["node_id"] == "2" and interrupted["node_type"] == "TestSlow"
            steps = [d["value"] for k, d in events if k == "progress"]
            assert steps[-1] < 400
            await sock.ws.close()
        entry = server.wait_history(prompt_id)
        assert entry["status"]["status_str"] == "error"
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"
        # a global interrupt (no body) while idle is harmless
        assert server.post("/interrupt").status == 200

    run(scenario())


def test_queue_listing_delete_and_clear(server: ServerProcess) -> None:
    blocker = server.queue(image_prompt(value=0.12, steps=400, delay=0.05))
    wait_until(lambda: server.get("/queue").json()["queue_running"], what="a running prompt")
    waiting = [server.queue(image_prompt(value=0.13 + i / 100, prefix="q")) for i in range(3)]
    queue = server.get("/api/queue").json()
    assert [item[1] for item in queue["queue_running"]] == [blocker]
    assert [item[1] for item in queue["queue_pending"]] == waiting
    number, pid, prompt, extra, outputs = queue["queue_pending"][0]
    assert pid == waiting[0] and prompt["1"]["class_type"] == "TestImage" and outputs == ["3"]
    assert server.get("/prompt").json() == {"exec_info": {"queue_remaining": 4}}
    assert server.post("/queue", {"delete": [waiting[1]]}).status == 200
    assert [i[1] for i in server.get("/queue").json()["queue_pending"]] == [waiting[0], waiting[2]]
    assert server.post("/api/queue", {"clear": True}).status == 200
    assert server.get("/queue").json()["queue_pending"] == []
    server.post("/interrupt")
    server.wait_history(blocker)
    assert server.get("/prompt").json()["exec_info"]["queue_remaining"] == 0


def test_front_and_number_order_the_queue(server: ServerProcess) -> None:
    blocker = server.queue(image_prompt(value=0.14, steps=400, delay=0.05))
    wait_until(lambda: server.get("/queue").json()["queue_running"], what="a running prompt")
    late = server.queue(image_prompt(value=0.15), number=10**9)
    normal = server.queue(image_prompt(value=0.16))
    first = server.queue(image_prompt(value=0.17), front=True)
    assert [i[1] for i in server.get("/queue").json()["queue_pending"]] == [first, normal, late]
    server.post("/queue", {"clear": True})
    server.post("/interrupt", {"prompt_id": blocker})
    server.wait_history(blocker)


def test_history_paging_item_delete_and_clear(server: ServerProcess) -> None:
    ids = [server.queue(image_prompt(value=0.2 + i / 100, prefix="hist")) for i in range(3)]
    for pid in ids:
        server.wait_history(pid)
    everything = server.get("/history").json()
    assert list(everything)[-3:] == ids
    last_two = server.get("/history?max_items=2").json()
    assert list(last_two) == ids[1:]
    total = len(everything)
    page = server.get(f"/api/history?max_items=1&offset={total - 3}").json()
    assert list(page) == [ids[0]]
    assert server.get("/history?max_items=abc").status == 400
    assert server.get(f"/history/{uuid.uuid4()}").json() == {}
    assert list(server.get(f"/api/history/{ids[0]}").json()) == [ids[0]]
    assert server.post("/history", {"delete": [ids[0]]}).status == 200
    assert server.get(f"/history/{ids[0]}").json() == {}
    assert server.post("/api/history", {"clear": True}).status == 200
    assert server.get("/history").json() == {}


def test_convert_route_turns_a_ui_workflow_into_a_prompt(server: ServerProcess) -> None:
    reply = server.post("/api/workflow/convert", ui_workflow())
    assert reply.status == 200, reply.body
    prompt = reply.json()["prompt"]
    assert set(prompt) == {"1", "2", "3"}
    assert prompt["1"]["inputs"] == {"width": 8, "height": 8, "value": 0.42}
    assert prompt["2"]["inputs"] == {"images": ["1", 0], "steps": 2, "delay": 0.0}
    assert prompt["3"]["inputs"] == {"images": ["2", 0], "filename_prefix": "ui", "kind": "output"}
    wrapped = server.post("/workflow/convert", {"workflow": ui_workflow()})
    assert wrapped.status == 200 and wrapped.json()["prompt"] == prompt
    broken = ui_workflow()
    broken["nodes"][0]["type"] = "NoSuchNode"
    refused = server.post("/workflow/convert", broken)
    assert refused.status == 400
    assert refused.json()["error"]["type"] == "workflow_conversion_failed"
    assert "1" in refused.json()["node_errors"]


def test_post_prompt_accepts_a_ui_workflow(server: ServerProcess) -> None:
    reply = server.post("/prompt", {"prompt": ui_workflow()})
    assert reply.status == 200, reply.body
    entry = server.wait_history(reply.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["3"]["images"][0]["filename"].startswith("ui_")
    # the UI workflow is kept for the PNG metadata, as the editor sends it
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"][0]["type"] == "TestImage"
    assert json.dumps(entry["prompt"][2], sort_keys=True) == json.dumps(
        server.post("/workflow/convert", ui_workflow()).json()["prompt"], sort_keys=True)
