"""ComfyUI's job API (`/api/jobs`), which current editors use for queue and history, plus our re-queue.

- `GET /jobs?status=a,b&workflow_id=&sort_by=created_at|execution_duration&sort_order=asc|desc&limit=&offset=`
  -> `{"jobs": [...], "pagination": {offset, limit, total, has_more}}`
- `GET /jobs/{id}` -> the job with its outputs and workflow (404 if unknown)
- `POST /jobs/{id}/cancel`, `POST /jobs/cancel {"job_ids": [...]}` -> `{"cancelled": bool}`: a pending
  job is cancelled, a running one interrupted.
- `POST /jobs/{id}/requeue` (diffloom): put an interrupted job (one a crash or the user stopped)
  back in the queue -> `{"requeued": true, "job": {...}}`, 409 if the job is not interrupted.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from ..prompt_store import (
    CANCEL_PENDING,
    CANCEL_RUNNING,
    PromptStateError,
    UnknownPromptError,
    to_job,
)
from .state import BadRequest, ServerState, error_response, json_body, query_int, state_of

routes = web.RouteTableDef()


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    store = state_of(request).store
    raw_status = request.query.get("status")
    status = [s.strip() for s in raw_status.split(",") if s.strip()] if raw_status else None
    limit = query_int(request, "limit", None)
    offset = query_int(request, "offset", 0) or 0
    try:
        jobs, total = await asyncio.to_thread(
            store.jobs, status=status, workflow_id=request.query.get("workflow_id") or None,
            sort_by=request.query.get("sort_by", "created_at"), sort_order=request.query.get("sort_order", "desc"),
            limit=limit, offset=offset)
    except ValueError as exc:
        raise BadRequest("invalid_query", str(exc)) from exc
    return web.json_response({"jobs": jobs, "pagination": {
        "offset": offset, "limit": limit, "total": total, "has_more": offset + len(jobs) < total}})


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    item = state_of(request).store.get(job_id)
    if item is None:
        return error_response(404, "job_not_found", "Job not found", f"no job with id {job_id!r}")
    return web.json_response(to_job(item, include_outputs=True))


async def _cancel(state: ServerState, job_id: str) -> bool:
    found = await asyncio.to_thread(state.store.cancel, job_id)
    if found == CANCEL_RUNNING:
        return state.worker.interrupt(job_id)
    return found == CANCEL_PENDING


@routes.post("/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    state = state_of(request)
    cancelled = await _cancel(state, request.match_info["job_id"])
    state.hub.send_status()
    return web.json_response({"cancelled": cancelled})


@routes.post("/jobs/cancel")
async def cancel_jobs(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await json_body(request, default={})
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("invalid_request", "the body must be {\"job_ids\": [ids]}")
    results = [await _cancel(state, job_id) for job_id in ids]
    state.hub.send_status()
    return web.json_response({"cancelled": any(results)})


@routes.post("/jobs/{job_id}/requeue")
async def requeue_job(request: web.Request) -> web.Response:
    state = state_of(request)
    job_id = request.match_info["job_id"]
    try:
        item = await asyncio.to_thread(state.store.requeue_interrupted, job_id)
    except UnknownPromptError:
        return error_response(404, "job_not_found", "Job not found", f"no job with id {job_id!r}")
    except PromptStateError as exc:
        return error_response(409, "job_not_interrupted", "Only an interrupted job can be re-queued", str(exc))
    state.hub.send_status()
    return web.json_response({"requeued": True, "job": to_job(item)})
