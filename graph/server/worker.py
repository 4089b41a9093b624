"""The prompt worker: one thread per device that takes prompts from the durable store and runs them.

This is the default, in the server process. With --devices or --ray-address, `workers.WorkerPool`
takes its place and uses the pieces shared here (`EventForwarder`, `record_finish`, the error shapes).

It claims the next pending prompt, runs `Executor.execute` in its own thread (the HTTP side stays
responsive), forwards every event to the server's loop through `emit`, writes the history entry,
then sends `status` and `executing {node: null}` (the completion signal clients wait for). An
interrupt stops the running prompt at its next node or progress step. Requests to free memory are
honoured between prompts, never in the middle of one.

Contract of `emit(event, data)` (called on the worker thread by the executor and node code):
events go to the prompt's `client_id` socket, or to everyone when the prompt has none. A `preview`
event carries a raw image, which is encoded here (on the worker thread) and sent as a binary frame.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..context import Interrupt
from ..executor import ExecutionResult, Executor
from ..prompt_store import ERROR, INTERRUPTED, SUCCESS, PromptStore, PromptStoreError, QueueItem
from .previews import encode_preview
from .websocket import ClientHub

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.25
GC_INTERVAL_SECONDS = 10.0
_STATUS_OF = {"success": SUCCESS, "error": ERROR, "invalid": ERROR, "interrupted": INTERRUPTED}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class FreeRequest:
    """What POST /free asked for, applied after the running prompt."""

    unload_models: bool = False
    free_memory: bool = False


class PromptWorker:
    """Runs queued prompts one at a time on one device."""

    def __init__(self, store: PromptStore, executor: Executor, hub: ClientHub, *, worker_id: str = "local",
                 preview_size: int = 512, default_extra_data: dict[str, Any] | None = None,
                 free_models: Callable[[bool, bool], None] | None = None,
                 warm_up: Callable[[], None] | None = None) -> None:
        self.store = store
        self.executor = executor
        self.hub = hub
        self.worker_id = worker_id
        self.preview_size = preview_size
        self.default_extra_data = dict(default_extra_data or {})
        self.free_models = free_models
        self.warm_up = warm_up
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._free: FreeRequest | None = None
        self._last_gc = time.monotonic()
        self._current: QueueItem | None = None
        self._current_node: str | None = None
        self._interrupt: Interrupt | None = None
        self.prompts_run = 0

    # ---- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"diffloom-worker-{self.worker_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running prompt (interrupted) and wait for the thread."""
        self._stop.set()
        self.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("worker %s: the running prompt did not stop within %.0f s", self.worker_id, timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- requests from the HTTP side ----------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is prompt_id, when given). True if one was interrupted.

        A prompt the store shows as running is always known here too: claiming it and making it
        the current prompt happen under the same lock (see `_claim`), so a cancel cannot slip between.
        """
        with self._lock:
            current, flag = self._current, self._interrupt
            if current is None or flag is None or (prompt_id is not None and current.prompt_id != prompt_id):
                return False
            flag.set()
            return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free models and/or the output cache once no prompt runs."""
        with self._lock:
            request = self._free or FreeRequest()
            request.unload_models |= unload_models
            request.free_memory |= free_memory
            self._free = request

    def now_executing(self) -> tuple[str | None, str | None, str | None]:
        """(prompt_id, node id, client_id) of what runs now, or Nones."""
        with self._lock:
            item = self._current
            if item is None:
                return None, None, None
            return item.prompt_id, self._current_node, item.extra_data.get("client_id")

    def status(self) -> dict[str, Any]:
        prompt_id, node, _ = self.now_executing()
        return {"worker_id": self.worker_id, "alive": self.alive, "running_prompt": prompt_id,
                "running_node": node, "prompts_run": self.prompts_run}

    # ---- the thread -------------------------------------------------------------------------------------

    def _loop(self) -> None:
        if self.warm_up is not None:
            started = time.monotonic()
            try:
                self.warm_up()
                log.info("worker %s: warmed up in %.1f s", self.worker_id, time.monotonic() - started)
            except Exception:  # noqa: BLE001 - a prompt will meet the same problem and report it
                log.exception("worker %s: warming up failed", self.worker_id)
        while not self._stop.is_set():
            try:
                self._apply_free()
                if not self.store.wait_for_item(timeout=IDLE_POLL_SECONDS):
                    self._maybe_collect()
                    continue
                if self._stop.is_set():
                    break
                item = self._claim()
                if item is not None:
                    self.run_item(item)
            except PromptStoreError as exc:
                if self.store.closed or self._stop.is_set():
                    break
                log.error("worker %s: prompt store error: %s", self.worker_id, exc)
                self._stop.wait(1.0)
            except Exception:  # noqa: BLE001 - the worker must outlive any single failure
                log.exception("worker %s: unexpected error; continuing", self.worker_id)
                self._stop.wait(1.0)

    def _claim(self) -> QueueItem | None:
        """Take the next prompt and make it current in one step (see `interrupt`)."""
        with self._lock:
            item = self.store.claim(self.worker_id)
            if item is not None:
                self._current, self._current_node, self._interrupt = item, None, Interrupt()
            return item

    def _apply_free(self) -> None:
        with self._lock:
            request, self._free = self._free, None
        if request is None:
            return
        if request.free_memory:
            self.executor.cache.clear()
        if self.free_models is not None and (request.unload_models or request.free_memory):
            try:
                self.free_models(request.unload_models, request.free_memory)
            except Exception:  # noqa: BLE001
                log.exception("worker %s: freeing models failed", self.worker_id)
        gc.collect()
        self._last_gc = time.monotonic()

    def _maybe_collect(self) -> None:
        if time.monotonic() - self._last_gc > GC_INTERVAL_SECONDS:
            gc.collect()
            self._last_gc = time.monotonic()

    def run_item(self, item: QueueItem) -> ExecutionResult:
        """Run one claimed prompt to its end and record it, on the calling thread."""
        sid = item.extra_data.get("client_id") or None
        with self._lock:
            if self._current is not item or self._interrupt is None:
                self._current, self._current_node, self._interrupt = item, None, Interrupt()
            flag = self._interrupt
        events = EventForwarder(self.hub, item.prompt_id, sid, preview_size=self.preview_size, on_node=self._set_node)
        extra_data = {**self.default_extra_data, **item.execution_extra_data}
        started = time.perf_counter()
        try:
            result = self.executor.execute(item.prompt, item.prompt_id, targets=item.outputs_to_execute or None,
                                           extra_data=extra_data, emit=events.emit, interrupt=flag)
        except BaseException as exc:  # noqa: BLE001 - an engine bug fails this prompt, not the server
            log.exception("worker %s: the executor failed on prompt %s", self.worker_id, item.prompt_id)
            result = crashed_result(item.prompt_id, events.node, exc, events.emit)
        if result.status == "invalid":
            report_invalid(result, events.emit)
        with self._lock:
            self._current, self._current_node, self._interrupt = None, None, None
        if result.status == "interrupted" and self._stop.is_set():
            # Interrupted by a shutdown, not by the user: keep it queued so it runs again at the next start.
            self.store.requeue(item.prompt_id, "the server stopped while this prompt ran; it runs again")
            log.info("Prompt %s re-queued: the server is stopping", item.prompt_id)
            return result
        self.prompts_run += 1
        record_finish(self.store, self.hub, item, result.status, outputs=result.outputs,
                      messages=[list(m) for m in result.messages], error=result.error, meta=events.meta,
                      worker_id=self.worker_id)
        log.info("Prompt %s %s in %.2f seconds", item.prompt_id, result.status, time.perf_counter() - started)
        self._maybe_collect()
        return result

    def _set_node(self, node: str | None) -> None:
        with self._lock:
            self._current_node = node


def crashed_result(prompt_id: str, node: str | None, exc: BaseException,
                   emit: Callable[[str, dict[str, Any]], None]) -> ExecutionResult:
    """The result of a prompt whose executor raised: an execution_error naming the exception, sent with emit."""
    data = {"prompt_id": prompt_id, "node_id": node, "node_type": None, "executed": [],
            "exception_message": f"internal error in the executor: {type(exc).__name__}: {exc}",
            "exception_type": f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins."),
            "traceback": traceback.format_exception(exc), "current_inputs": {}, "current_outputs": [],
            "timestamp": _now_ms()}
    emit("execution_error", data)
    return ExecutionResult(prompt_id, "error", error=data, messages=[("execution_error", data)])


def report_invalid(result: ExecutionResult, emit: Callable[[str, dict[str, Any]], None]) -> None:
    """The prompt was valid when queued but not now (a model file removed): tell the client why."""
    outcome = result.validation
    node_errors = outcome.node_errors_json() if outcome is not None else {}
    first = next(iter(node_errors), None)
    data = {"prompt_id": result.prompt_id, "node_id": first,
            "node_type": node_errors[first]["class_type"] if first else None, "executed": [],
            "exception_message": "the prompt no longer passes validation:\n" +
                                 "\n".join(outcome.messages() if outcome is not None else []),
            "exception_type": "ValidationError", "traceback": [], "current_inputs": {},
            "current_outputs": [], "timestamp": _now_ms(), "node_errors": node_errors}
    emit("execution_error", data)
    result.error = data
    result.messages.append(("execution_error", data))


def record_finish(store: PromptStore, hub: ClientHub, item: QueueItem, status: str, *,
                  outputs: dict[str, Any], messages: list[list[Any]], error: dict[str, Any] | None,
                  meta: dict[str, Any], worker_id: str) -> None:
    """Write a finished prompt to the history, then tell clients (`status`, `executing {node: null}`)."""
    try:
        store.finish(item.prompt_id, _STATUS_OF.get(status, ERROR), outputs=outputs, messages=messages,
                     error=error if status != "success" else None, meta=meta)
    except PromptStoreError as exc:
        log.error("worker %s: could not record prompt %s: %s", worker_id, item.prompt_id, exc)
    sid = item.extra_data.get("client_id") or None
    hub.call_threadsafe(hub.send_status)
    hub.call_threadsafe(hub.send, "executing", {"node": None, "prompt_id": item.prompt_id}, sid)


class EventForwarder:
    """The `emit` of one prompt: routes events to the loop and keeps what the history needs.

    Used on the thread that runs the prompt, or on the thread that receives a worker process's or
    Ray actor's events (their previews arrive already encoded, as bytes).
    """

    def __init__(self, hub: ClientHub, prompt_id: str, sid: str | None, *, preview_size: int = 512,
                 on_node: Callable[[str | None], None] | None = None) -> None:
        self.hub = hub
        self.prompt_id = prompt_id
        self.sid = sid
        self.preview_size = preview_size
        self.on_node = on_node
        self.node: str | None = None
        self.meta: dict[str, Any] = {}
        self.states: dict[str, dict[str, Any]] = {}

    def emit(self, event: str, data: dict[str, Any]) -> None:
        try:
            self._emit(event, data)
        except Exception:  # noqa: BLE001 - a bad preview must not fail the node that sent it
            log.exception("prompt %s: could not forward event %s", self.prompt_id, event)

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        if event == "preview":
            self._preview(data)
            return
        self.hub.call_threadsafe(self.hub.send, event, data, self.sid)
        if event == "executing":
            self._node_state(data.get("node"))
        elif event == "executed":
            node = str(data.get("node"))
            parent = data.get("parent_node")
            self.meta[node] = {"node_id": node, "display_node": str(data.get("display_node", node)),
                               "parent_node": parent, "real_node_id": str(parent or node)}
        elif event == "progress":
            state = self.states.setdefault(str(data.get("node")), {"state": "running"})
            state.update(value=data.get("value"), max=data.get("max"))
            self._send_progress_state()
        elif event in ("execution_success", "execution_error", "execution_interrupted") and self.states:
            final = "finished" if event == "execution_success" else "error"
            for state in self.states.values():
                if state.get("state") == "running":
                    state["state"] = final
            self._send_progress_state()

    def _node_state(self, node: Any) -> None:
        if self.node is not None and self.node in self.states and self.states[self.node].get("state") == "running":
            self.states[self.node]["state"] = "finished"
        self.node = None if node is None else str(node)
        if self.on_node is not None:
            self.on_node(self.node)
        if self.node is not None:
            self.states[self.node] = {"value": 0, "max": 1, "state": "running"}
            self._send_progress_state()

    def _send_progress_state(self) -> None:
        nodes = {node: {"value": s.get("value", 0), "max": s.get("max", 1), "state": s.get("state", "running"),
                        "node_id": node, "prompt_id": self.prompt_id, "display_node_id": node,
                        "parent_node_id": None, "real_node_id": node}
                 for node, s in self.states.items()}
        self.hub.call_threadsafe(self.hub.send, "progress_state", {"prompt_id": self.prompt_id, "nodes": nodes},
                                 self.sid)
        # A node's end is announced once: resending every finished node at every step grows with the square
        # of the prompt's size (54 KB per node at 600 nodes), so later messages carry only live nodes.
        for node in [n for n, st in self.states.items() if st.get("state") != "running"]:
            del self.states[node]

    def _preview(self, data: dict[str, Any]) -> None:
        image, mime = encode_preview(data["image"], self.preview_size)
        node = str(data.get("node_id") or self.node or "")
        metadata = {"node_id": node, "prompt_id": self.prompt_id,
                    "display_node_id": str(data.get("display_node_id") or node),
                    "parent_node_id": data.get("parent_node_id"), "real_node_id": node}
        self.hub.call_threadsafe(self.hub.send_preview, image, mime, metadata, self.sid)
