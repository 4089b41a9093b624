"""The worker pool: several workers (local processes or Ray actors) fed from the one durable queue.

It shows the server the same face as the single in-process `PromptWorker` (start, stop, interrupt,
request_free, now_executing, status), so routes, websocket and history do not change.

Dispatch: prompts start in queue order. Each goes to an idle worker that already holds its model
files (model affinity: the worker's loaded models against the prompt's loader inputs), otherwise to
the idle worker that has waited longest (the least busy). A prompt re-queued after its worker died
goes to another worker when one is idle. Claiming and handing over happen under one lock, so an
interrupt or cancel never slips between them.

Faults: a worker that dies mid-prompt (a killed process, a dead actor or node) has its prompt put
back in the queue once (`PromptStore.requeue`: the history keeps an `execution_requeued` message
with the reason and the worker); a second death fails it with the reason. The dead worker is
started again (backing off while it keeps failing) and rejoins the dispatch when it is ready.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...prompt_store import RUNNING, PromptStore, PromptStoreError, QueueItem
from ..websocket import ClientHub
from ..worker import EventForwarder, FreeRequest, record_finish
from .affinity import holds, model_keys
from .protocol import Job, WorkerBackend, WorkerLost

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.25
START_TIMEOUT_SECONDS = 300.0
RESTART_DELAY_MIN = 1.0
RESTART_DELAY_MAX = 60.0
DEFAULT_MAX_RETRIES = 1
# An idle worker is asked this often whether it still lives, so a dead one restarts before it gets a prompt.
HEALTH_CHECK_SECONDS = 5.0


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class WorkerSlot:
    """One worker as the pool sees it: its backend, its state, the prompt it runs, the models it holds."""

    backend: WorkerBackend
    state: str = "starting"  # starting | ready | checking (alive?) | busy | restarting | failed | stopping | stopped
    item: QueueItem | None = None
    node: str | None = None
    interrupt_requested: bool = False
    held: frozenset[str] = frozenset()
    info: dict[str, Any] = field(default_factory=dict)
    idle_since: float = 0.0
    free_request: FreeRequest | None = None
    prompts_run: int = 0
    restarts: int = 0
    last_error: str | None = None
    thread: threading.Thread | None = None

    @property
    def worker_id(self) -> str:
        return self.backend.worker_id

    def where(self) -> str:
        host = self.info.get("host")
        return f"{self.backend.device}" + (f" on host {host}" if host else "")

    def describe(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "device": self.info.get("device", self.backend.device),
                "state": self.state, "host": self.info.get("host"), "pid": self.info.get("pid"),
                "node_ip": self.info.get("node_ip"),
                "running_prompt": self.item.prompt_id if self.item is not None else None,
                "running_node": self.node, "prompts_run": self.prompts_run, "restarts": self.restarts,
                "held_models": sorted(self.held), "models": self.info.get("models", {}),
                "cache": self.info.get("cache", {}), "last_error": self.last_error}


class WorkerPool:
    """Runs queued prompts on several workers at once; the server's worker when --devices or --ray-address is set."""

    def __init__(self, store: PromptStore, hub: ClientHub, backends: Sequence[WorkerBackend] | Callable[[], Sequence[WorkerBackend]],
                 *, kind: str = "processes", preview_size: int = 512, max_retries: int = DEFAULT_MAX_RETRIES,
                 start_timeout: float = START_TIMEOUT_SECONDS, default_extra_data: dict[str, Any] | None = None,
                 on_stop: Callable[[], None] | None = None) -> None:
        self.store = store
        self.hub = hub
        self.kind = kind
        self.worker_id = f"pool:{kind}"
        self.preview_size = preview_size
        self.max_retries = max_retries
        self.start_timeout = start_timeout
        self.default_extra_data = dict(default_extra_data or {})
        self.on_stop = on_stop
        self._make_backends = backends if callable(backends) else (lambda: list(backends))
        self.slots: list[WorkerSlot] = []
        self._cond = threading.Condition()
        self._dispatch_lock = threading.Lock()
        self._stop = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._started = False

    # ---- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the workers (joining Ray first, if that is the kind) and start them; returns at once."""
        if self._started:
            return
        self._started = True
        self._stop.clear()
        self.slots = [WorkerSlot(backend) for backend in self._make_backends()]
        if not self.slots:
            raise ValueError("the worker pool has no workers: give --devices or --ray-workers >= 1")
        for slot in self.slots:
            slot.thread = threading.Thread(target=self._slot_loop, args=(slot,), daemon=True,
                                           name=f"diffloom-slot-{slot.worker_id}")
            slot.thread.start()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="diffloom-dispatch", daemon=True)
        self._dispatcher.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt running prompts, stop every worker and wait for them (stuck ones are killed)."""
        if not self._started:
            return
        self._stop.set()
        self._interrupt_all(by_user=False)
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            if slot.thread is None:
                continue
            slot.thread.join(max(0.1, deadline - time.monotonic()))
            if slot.thread.is_alive():
                log.warning("worker %s did not stop within %.0f s; killing it", slot.worker_id, timeout)
                slot.backend.kill()
                slot.thread.join(10.0)
        if self._dispatcher is not None:
            self._dispatcher.join(5.0)
        self._started = False
        if self.on_stop is not None:
            self.on_stop()

    @property
    def alive(self) -> bool:
        return any(s.thread is not None and s.thread.is_alive() for s in self.slots)

    @property
    def prompts_run(self) -> int:
        return sum(s.prompts_run for s in self.slots)

    def slot(self, worker_id: str) -> WorkerSlot:
        """The slot of a worker by id (KeyError naming the ids there are)."""
        for slot in self.slots:
            if slot.worker_id == worker_id:
                return slot
        raise KeyError(f"no worker {worker_id!r}; workers: {', '.join(s.worker_id for s in self.slots)}")

    def wait_ready(self, count: int | None = None, timeout: float = 120.0) -> None:
        """Block until `count` workers (all by default) are ready or busy; TimeoutError naming the others."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ready = [s for s in self.slots if s.state in ("ready", "busy")]
                if len(ready) >= (len(self.slots) if count is None else count):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    states = ", ".join(f"{s.worker_id}: {s.state} ({s.last_error})" for s in self.slots)
                    raise TimeoutError(f"workers not ready within {timeout:.0f} s: {states}")
                self._cond.wait(min(remaining, 0.5))

    # ---- requests from the HTTP side ----------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt prompt_id wherever it runs (every running prompt when None). True if one was running."""
        return self._interrupt_all(prompt_id)

    def _interrupt_all(self, prompt_id: str | None = None, *, by_user: bool = True) -> bool:
        with self._cond:
            targets = [(s, s.item.prompt_id) for s in self.slots
                       if s.item is not None and (prompt_id is None or s.item.prompt_id == prompt_id)]
            for slot, _ in targets:
                slot.interrupt_requested |= by_user
        for slot, pid in targets:
            slot.backend.interrupt(pid)
        return bool(targets)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free models and/or cached results on every worker, each after its running prompt."""
        with self._cond:
            for slot in self.slots:
                request = slot.free_request or FreeRequest()
                request.unload_models |= unload_models
                request.free_memory |= free_memory
                slot.free_request = request
            self._cond.notify_all()

    def now_executing(self) -> tuple[str | None, str | None, str | None]:
        """(prompt_id, node id, client_id) of the first running prompt, or Nones."""
        with self._cond:
            for slot in self.slots:
                if slot.item is not None:
                    return slot.item.prompt_id, slot.node, slot.item.extra_data.get("client_id")
        return None, None, None

    def status(self) -> dict[str, Any]:
        with self._cond:
            workers = [s.describe() for s in self.slots]
        running = next((w for w in workers if w["running_prompt"]), None)
        return {"worker_id": self.worker_id, "kind": self.kind, "alive": self.alive,
                "running_prompt": running["running_prompt"] if running else None,
                "running_node": running["running_node"] if running else None,
                "prompts_run": sum(w["prompts_run"] for w in workers), "workers": workers}

    # ---- dispatch ------------------------------------------------------------------------------------

    def _idle(self) -> list[WorkerSlot]:
        """Ready workers without a prompt, the longest idle first (call with the lock held)."""
        return sorted((s for s in self.slots if s.state == "ready" and s.item is None), key=lambda s: s.idle_since)

    def _best(self, item: QueueItem, idle: list[WorkerSlot]) -> WorkerSlot:
        """The idle worker a prompt should go to: not the one it just failed on, holding its models, idle longest."""
        wanted = model_keys(item.prompt)
        failed_on = _previous_worker(item) if len(idle) > 1 else None
        return min(idle, key=lambda s: (s.worker_id == failed_on, not holds(s.held, wanted), s.idle_since))

    def dispatch(self) -> int:
        """Hand pending prompts to idle workers until one of the two runs out; how many were handed out."""
        handed = 0
        with self._dispatch_lock:
            while not self._stop.is_set():
                claimed = False
                with self._cond:
                    idle = self._idle()
                    for slot in list(idle):
                        # With one idle worker every prompt is its own: the plain claim reads one row, not all.
                        accept = None if len(idle) == 1 else (lambda it, s=slot: self._best(it, idle) is s)
                        try:
                            item = self.store.claim(slot.worker_id, accept=accept)
                        except PromptStoreError as exc:
                            if not (self.store.closed or self._stop.is_set()):
                                log.error("dispatch: prompt store error: %s", exc)
                            return handed
                        if item is None:
                            continue
                        slot.item, slot.node, slot.interrupt_requested, slot.state = item, None, False, "busy"
                        idle.remove(slot)
                        claimed = True
                        handed += 1
                    if claimed:
                        self._cond.notify_all()
                if not claimed or not idle:
                    break
        return handed

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._cond:
                    if not self._idle():
                        self._cond.wait(1.0)
                        continue
                if not self.store.wait_for_item(timeout=IDLE_POLL_SECONDS):
                    continue
                if self.dispatch() == 0:
                    self._stop.wait(IDLE_POLL_SECONDS)  # another thread took them; look again soon
            except PromptStoreError as exc:
                if self.store.closed or self._stop.is_set():
                    break
                log.error("dispatch: prompt store error: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # noqa: BLE001 - dispatch must outlive any single failure
                log.exception("dispatch: unexpected error; continuing")
                self._stop.wait(1.0)

    # ---- one worker ----------------------------------------------------------------------------------

    def _slot_loop(self, slot: WorkerSlot) -> None:
        delay = RESTART_DELAY_MIN
        while not self._stop.is_set():
            try:
                info = slot.backend.start(self.start_timeout)
            except Exception as exc:  # noqa: BLE001 - WorkerStartError, or Ray/OS errors on the way
                with self._cond:
                    slot.state, slot.last_error = "failed", str(exc)
                    self._cond.notify_all()
                if not self._stop.is_set():
                    log.error("worker %s could not start (retrying in %.0f s): %s", slot.worker_id, delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, RESTART_DELAY_MAX)
                continue
            delay = RESTART_DELAY_MIN
            with self._cond:
                slot.info, slot.held = dict(info), frozenset(info.get("held_models", ()))
                slot.state, slot.idle_since, slot.last_error = "ready", time.monotonic(), None
                self._cond.notify_all()
            log.info("worker %s ready: %s (pid %s)%s", slot.worker_id, slot.where(), info.get("pid"),
                     f" after {slot.restarts} restart(s)" if slot.restarts else "")
            try:
                self._serve(slot)
                break
            except WorkerLost as exc:
                self._lost(slot, exc)
                slot.restarts += 1
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave the slot dead
                log.exception("worker %s: unexpected error; restarting it", slot.worker_id)
                self._lost(slot, WorkerLost(f"{type(exc).__name__}: {exc}"))
                slot.restarts += 1
                slot.backend.kill()
        with self._cond:
            slot.state = "stopping"
        slot.backend.close(5.0)
        with self._cond:
            slot.state = "stopped"
            self._cond.notify_all()

    def _serve(self, slot: WorkerSlot) -> None:
        """Run what the dispatcher hands this worker until the pool stops; WorkerLost when it dies."""
        self.dispatch()
        checked = time.monotonic()
        while True:
            with self._cond:
                while slot.item is None and slot.free_request is None and not self._stop.is_set():
                    if time.monotonic() - checked > HEALTH_CHECK_SECONDS:
                        break
                    self._cond.wait(1.0)
                if self._stop.is_set() and slot.item is None:
                    return
                item, free, slot.free_request = slot.item, slot.free_request, None
                if item is None and free is None:
                    slot.state = "checking"  # not handed prompts while it is asked
            if item is None and free is None:
                alive = slot.backend.alive()
                checked = time.monotonic()
                with self._cond:
                    if slot.state == "checking":
                        slot.state = "ready"
                        self._cond.notify_all()
                if not alive:
                    raise WorkerLost(f"worker {slot.worker_id} ({slot.where()}) died while idle")
                continue
            if free is not None:
                info = slot.backend.free(free.unload_models, free.free_memory)
                with self._cond:
                    slot.info, slot.held = dict(info), frozenset(info.get("held_models", ()))
            if item is not None:
                self._run(slot, item)
                self.dispatch()

    def _run(self, slot: WorkerSlot, item: QueueItem) -> None:
        sid = item.extra_data.get("client_id") or None

        def on_node(node: str | None) -> None:
            with self._cond:
                slot.node = node

        events = EventForwarder(self.hub, item.prompt_id, sid, preview_size=self.preview_size, on_node=on_node)
        job = Job(item.prompt_id, item.prompt, list(item.outputs_to_execute),
                  {**self.default_extra_data, **item.execution_extra_data})
        started = time.perf_counter()
        result = slot.backend.run(job, events.emit)
        with self._cond:
            by_user = slot.interrupt_requested
            slot.item, slot.node, slot.interrupt_requested = None, None, False
            if result.info:
                slot.info, slot.held = dict(result.info), frozenset(result.info.get("held_models", ()))
            slot.state, slot.idle_since = "ready", time.monotonic()
            self._cond.notify_all()
        if result.status == "interrupted" and self._stop.is_set() and not by_user:
            # Stopped by the server's shutdown, not by a user: it stays queued and runs at the next start.
            self.store.requeue(item.prompt_id, "the server stopped while this prompt ran; it runs again")
            log.info("Prompt %s re-queued: the server is stopping", item.prompt_id)
            return
        with self._cond:
            slot.prompts_run += 1
        record_finish(self.store, self.hub, item, result.status, outputs=result.outputs, messages=result.messages,
                      error=result.error, meta=events.meta, worker_id=slot.worker_id)
        log.info("Prompt %s %s on worker %s in %.2f seconds", item.prompt_id, result.status, slot.worker_id,
                 time.perf_counter() - started)

    def _lost(self, slot: WorkerSlot, exc: WorkerLost) -> None:
        """A worker died: re-queue its prompt once (or fail it with the reason), mark it restarting."""
        with self._cond:
            item, interrupted, node = slot.item, slot.interrupt_requested, slot.node
            slot.item, slot.node, slot.interrupt_requested = None, None, False
            slot.state, slot.last_error, slot.held = "restarting", str(exc), frozenset()
            where = slot.where()
            self._cond.notify_all()
        log.error("worker %s (%s) lost: %s", slot.worker_id, where, exc)
        if item is None:
            return
        try:
            current = self.store.get(item.prompt_id)
            if current is None or current.status != RUNNING or current.worker_id != slot.worker_id:
                return
            reason = f"worker {slot.worker_id} ({where}) died while running this prompt: {exc}"
            sid = item.extra_data.get("client_id") or None
            if self._stop.is_set() and not interrupted:
                self.store.requeue(item.prompt_id, reason + "; the server is stopping, it runs again at the next start")
            elif interrupted:
                data = {"prompt_id": item.prompt_id, "node_id": node, "node_type": None, "executed": [],
                        "timestamp": _now_ms(), "reason": reason}
                self.hub.call_threadsafe(self.hub.send, "execution_interrupted", data, sid)
                record_finish(self.store, self.hub, item, "interrupted", outputs={},
                              messages=[["execution_interrupted", data]], error=data, meta={}, worker_id=slot.worker_id)
            elif current.retries < self.max_retries:
                self.store.requeue(item.prompt_id, reason + "; re-queued to run again")
                log.warning("prompt %s re-queued after worker %s died (retry %d of %d)", item.prompt_id,
                            slot.worker_id, current.retries + 1, self.max_retries)
                self.hub.call_threadsafe(self.hub.send_status)
            else:
                data = {"prompt_id": item.prompt_id, "node_id": node, "node_type": None, "executed": [],
                        "exception_message": f"{reason}; not re-queued again: it was already retried "
                                             f"{current.retries} time(s)",
                        "exception_type": "WorkerLost", "traceback": [], "current_inputs": {},
                        "current_outputs": [], "timestamp": _now_ms()}
                self.hub.call_threadsafe(self.hub.send, "execution_error", data, sid)
                record_finish(self.store, self.hub, item, "error", outputs={}, messages=[["execution_error", data]],
                              error=data, meta={}, worker_id=slot.worker_id)
        except PromptStoreError as exc2:
            log.error("worker %s: could not put prompt %s back in the queue: %s", slot.worker_id, item.prompt_id, exc2)


def _previous_worker(item: QueueItem) -> str | None:
    """The worker a re-queued prompt last failed on (from its execution_requeued note), if any."""
    if not item.retries:
        return None
    for name, data in reversed(item.messages):
        if name == "execution_requeued" and isinstance(data, dict):
            return data.get("previous_worker")
    return None
