"""Prompt, queue, interrupt and history routes, with ComfyUI's request and response shapes.

`POST /prompt` validates before queueing (HTTP 400 with `error` and `node_errors` when no output can
run) and writes the prompt to the durable store before answering. It also takes a UI-format
workflow as `prompt` and converts it on the server; `POST /workflow/convert` does only the
conversion: body = UI workflow (or `{"workflow": ...}`), answer = `{"prompt": <API prompt>}`.
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..prompt_store import (
    DuplicatePromptError,
    InvalidPromptIdError,
    to_history_entry,
    to_queue_entry,
)
from ..ui_workflow import WorkflowConversionError, is_ui_workflow, to_api
from ..validation import validate_prompt
from .state import BadRequest, ServerState, error_response, json_body, query_int, state_of

routes = web.RouteTableDef()


def _conversion_error(exc: WorkflowConversionError) -> web.Response:
    node_errors: dict[str, Any] = {}
    for problem in exc.problems:
        if problem.node_id is None:
            continue
        entry = node_errors.setdefault(problem.node_id, {"errors": [], "dependent_outputs": [],
                                                         "class_type": problem.node_type})
        entry["errors"].append({"type": "workflow_conversion_failed", "message": "Cannot convert this node",
                                "details": str(problem), "extra_info": {}})
    return web.json_response({"error": {"type": "workflow_conversion_failed",
                                         "message": "Cannot convert the UI workflow to the API format",
                                         "details": "\n".join(str(p) for p in exc.problems), "extra_info": {}},
                              "node_errors": node_errors}, status=400)


async def _convert(state: ServerState, workflow: Any) -> dict[str, Any]:
    info = await asyncio.to_thread(state.registry.object_info)
    return await asyncio.to_thread(to_api, workflow, info)


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await json_body(request, default={})
    if not isinstance(body, dict):
        raise BadRequest("invalid_prompt", "the body must be a JSON object with a 'prompt'")
    prompt = body.get("prompt")
    if not prompt:
        return error_response(400, "no_prompt", "No prompt provided", "the body has no 'prompt' (API format)")
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        raise BadRequest("invalid_prompt", f"extra_data must be an object, got {type(extra_data).__name__}")
    extra_data = dict(extra_data)
    if is_ui_workflow(prompt):
        try:
            converted = await _convert(state, prompt)
        except WorkflowConversionError as exc:
            return _conversion_error(exc)
        pnginfo = dict(extra_data.get("extra_pnginfo") or {})
        pnginfo.setdefault("workflow", prompt)
        extra_data["extra_pnginfo"] = pnginfo
        prompt = converted
    if not isinstance(prompt, dict):
        return error_response(400, "invalid_prompt", "Invalid prompt",
                              f"'prompt' must be an object of nodes (API format), got {type(prompt).__name__}")
    if body.get("client_id") is not None:
        extra_data["client_id"] = str(body["client_id"])
    targets = body.get("partial_execution_targets")
    if targets is not None and not isinstance(targets, list):
        raise BadRequest("invalid_prompt", "partial_execution_targets must be a list of node ids")
    outcome = await asyncio.to_thread(validate_prompt, prompt, state.registry, targets)
    if not outcome.ok:
        return web.json_response(outcome.response(), status=400)
    number = body.get("number")
    try:
        item = await asyncio.to_thread(state.store.add, prompt, outputs_to_execute=outcome.outputs,
                                       extra_data=extra_data, prompt_id=body.get("prompt_id"),
                                       number=number, front=bool(body.get("front")))
    except InvalidPromptIdError as exc:
        return error_response(400, "invalid_prompt_id", "Invalid prompt_id", str(exc))
    except DuplicatePromptError as exc:
        return error_response(409, "duplicate_prompt_id", "Duplicate prompt_id", str(exc))
    except ValueError as exc:
        return error_response(400, "invalid_prompt", "Invalid prompt", str(exc))
    state.hub.send_status()
    return web.json_response({"prompt_id": item.prompt_id, "number": item.number,
                              "node_errors": outcome.node_errors_json()})


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    return web.json_response({"exec_info": {"queue_remaining": state.store.queue_remaining()}})


@routes.post("/workflow/convert")
async def convert_workflow(request: web.Request) -> web.Response:
    """A UI-format workflow in, `{"prompt": <API-format prompt>}` out (400 with per-node problems)."""
    body = await json_body(request, allow_empty=False)
    workflow = body.get("workflow") if isinstance(body, dict) and "nodes" not in body else body
    try:
        prompt = await _convert(state_of(request), workflow)
    except WorkflowConversionError as exc:
        return _conversion_error(exc)
    return web.json_response({"prompt": prompt})


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    store = state_of(request).store
    running, pending = store.running(), store.pending()
    return web.json_response({"queue_running": [to_queue_entry(i) for i in running],
                              "queue_pending": [to_queue_entry(i) for i in pending]})


def _id_list(body: dict[str, Any], key: str) -> list[str]:
    ids = body.get(key, [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("invalid_request", f"'{key}' must be a list of prompt ids (strings)")
    return ids


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await json_body(request, default={})
    if not isinstance(body, dict):
        raise BadRequest("invalid_request", "the body must be an object like {\"clear\": true} or {\"delete\": [ids]}")
    if body.get("clear"):
        await asyncio.to_thread(state.store.clear_pending)
    if "delete" in body:
        await asyncio.to_thread(state.store.delete_pending, _id_list(body, "delete"))
    state.hub.send_status()
    return web.Response(status=200)


@routes.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await json_body(request, default={})
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    state.worker.interrupt(str(prompt_id) if prompt_id else None)
    return web.Response(status=200)


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    store = state_of(request).store
    max_items = query_int(request, "max_items", None)
    offset = query_int(request, "offset", -1)
    items = await asyncio.to_thread(store.history, max_items, offset)
    return web.json_response({item.prompt_id: to_history_entry(item) for item in items})


@routes.get("/history/{prompt_id}")
async def get_history_item(request: web.Request) -> web.Response:
    item = state_of(request).store.history_item(request.match_info["prompt_id"])
    return web.json_response({} if item is None else {item.prompt_id: to_history_entry(item)})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    store = state_of(request).store
    body = await json_body(request, default={})
    if not isinstance(body, dict):
        raise BadRequest("invalid_request", "the body must be an object like {\"clear\": true} or {\"delete\": [ids]}")
    if body.get("clear"):
        await asyncio.to_thread(store.clear_history)
    if "delete" in body:
        await asyncio.to_thread(store.delete_history, _id_list(body, "delete"))
    return web.Response(status=200)
