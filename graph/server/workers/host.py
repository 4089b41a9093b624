"""The worker side: runs whole prompts for the server inside a worker process or a Ray actor.

A `WorkerHost` builds its own runtime once (nodes, folders, model manager, device: whatever the
setup function `module:function` returns, `server:build_runtime` in diffloom) and its own executor
and output cache, so models and cached results stay resident between the prompts it runs. Events
go back through `send(event, data)`, previews encoded here (the server only forwards bytes).
Before running, it checks that the prompt's model files exist on this machine: a node without them
says so by name instead of failing deep inside a loader.
"""
from __future__ import annotations

import gc
import importlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ...cache import OutputCache
from ...context import Interrupt
from ...executor import ExecutionResult, Executor
from ..options import ServerOptions
from ..previews import encode_preview
from ..runtime import ServerRuntime
from ..worker import crashed_result, report_invalid
from .affinity import held_model_keys, model_names
from .protocol import Job, JobResult, OnEvent

log = logging.getLogger(__name__)

# Interrupts may arrive before the job they name (they travel on another channel): remembered, bounded.
EARLY_INTERRUPTS_KEPT = 64


def load_callable(spec: str) -> Callable[..., Any]:
    """The function a `module:function` spec names (imported here, in the worker)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"worker setup {spec!r} must look like 'module:function' (e.g. 'server:build_runtime')")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"worker setup {spec!r} names a {type(target).__name__}, not a function")
    return target


def _now_ms() -> int:
    return int(time.time() * 1000)


class WorkerHost:
    """One worker's runtime and executor; runs one prompt at a time, interruptible from another thread."""

    def __init__(self, options: ServerOptions, worker_id: str, setup: str) -> None:
        built = load_callable(setup)(options)
        registry, folders, runtime = built[0], built[1], built[2]
        self.options = options
        self.worker_id = worker_id
        self.folders = folders
        self.runtime: ServerRuntime = runtime if isinstance(runtime, ServerRuntime) else ServerRuntime()
        self.executor = Executor(registry, OutputCache(options.cache_mode, options.cache_max_bytes,
                                                       options.cache_max_entries))
        if self.runtime.on_out_of_memory is not None:
            self.executor.oom_hooks.append(self.runtime.on_out_of_memory)
        if self.runtime.warm_up is not None:
            self.runtime.warm_up()  # before the worker says it is ready, so its first prompt does not wait
        self.hostname = socket.gethostname()
        self.prompts_run = 0
        self._lock = threading.Lock()
        self._running: tuple[str, Interrupt] | None = None
        self._early: deque[str] = deque(maxlen=EARLY_INTERRUPTS_KEPT)

    # ---- facts ------------------------------------------------------------------------------------

    def device_name(self) -> str:
        try:
            devices = self.runtime.devices() if self.runtime.devices is not None else []
        except Exception:  # noqa: BLE001 - a failing figure must not fail the worker
            devices = []
        return str(devices[0].get("name")) if devices else os.environ.get("DIFFLOOM_DEVICE", "") or "default"

    def model_stats(self) -> dict[str, Any]:
        if self.runtime.model_stats is None:
            return {}
        try:
            return dict(self.runtime.model_stats())
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{type(exc).__name__}: {exc}"}

    def info(self) -> dict[str, Any]:
        """What the server shows and dispatches on: where this worker runs and which models it holds."""
        stats = self.model_stats()
        return {"worker_id": self.worker_id, "host": self.hostname, "pid": os.getpid(),
                "device": self.device_name(), "held_models": held_model_keys(stats, self.folders),
                "models": {k: v for k, v in stats.items() if k != "models"},
                "cache": self.executor.cache.stats(), "prompts_run": self.prompts_run}

    # ---- requests ---------------------------------------------------------------------------------

    def interrupt(self, prompt_id: str) -> bool:
        """Stop prompt_id if it runs here; remember it if it has not started yet. True if it was running."""
        with self._lock:
            if self._running is not None and self._running[0] == prompt_id:
                self._running[1].set()
                return True
            self._early.append(prompt_id)
            return False

    def interrupt_running(self) -> None:
        """Stop whatever prompt runs here (the worker is shutting down)."""
        with self._lock:
            if self._running is not None:
                self._running[1].set()

    def free(self, unload_models: bool, free_memory: bool) -> dict[str, Any]:
        """POST /free on this worker: drop cached results and/or models (between prompts)."""
        if free_memory:
            self.executor.cache.clear()
        if self.runtime.free_models is not None and (unload_models or free_memory):
            try:
                self.runtime.free_models(unload_models, free_memory)
            except Exception:  # noqa: BLE001
                log.exception("worker %s: freeing models failed", self.worker_id)
        gc.collect()
        return self.info()

    def run(self, job: Job, send: OnEvent) -> JobResult:
        """Run one prompt to its end; events go to send(event, data) as they happen."""
        flag = Interrupt()
        with self._lock:
            self._running = (job.prompt_id, flag)
            if job.prompt_id in self._early:
                self._early.remove(job.prompt_id)
                flag.set()
        node: list[str | None] = [None]

        def emit(event: str, data: dict[str, Any]) -> None:
            if event == "executing":
                node[0] = None if data.get("node") is None else str(data.get("node"))
            if event == "preview":
                image, _mime = encode_preview(data["image"], self.options.preview_size)
                data = {**data, "image": image}
            send(event, data)

        started = time.perf_counter()
        try:
            result = self.missing_model(job, emit)
            if result is None:
                result = self.executor.execute(job.prompt, job.prompt_id, targets=job.targets or None,
                                               extra_data=job.extra_data, emit=emit, interrupt=flag)
        except BaseException as exc:  # noqa: BLE001 - an engine bug fails this prompt, not the worker
            log.exception("worker %s: the executor failed on prompt %s", self.worker_id, job.prompt_id)
            result = crashed_result(job.prompt_id, node[0], exc, emit)
        finally:
            with self._lock:
                self._running = None
        if result.status == "invalid":
            report_invalid(result, emit)
        self.prompts_run += 1
        status = "error" if result.status == "invalid" else result.status
        return JobResult(job.prompt_id, status, outputs=result.outputs, messages=[list(m) for m in result.messages],
                         error=result.error if status != "success" else None,
                         duration=time.perf_counter() - started, info=self.info())

    def missing_model(self, job: Job, emit: OnEvent) -> ExecutionResult | None:
        """An error result when a model file the prompt names is not on this machine, else None."""
        find = getattr(self.folders, "get_full_path", None)
        if find is None:
            return None
        for node_id, folder, name in model_names(job.prompt):
            try:
                if find(folder, name) is not None:
                    continue
                where = ", ".join(self.folders.get_folder_paths(folder))
            except (KeyError, ValueError):  # unknown key or unsafe name: validation reports those
                continue
            node = job.prompt.get(node_id) or {}
            data = {"prompt_id": job.prompt_id, "node_id": node_id, "node_type": node.get("class_type"),
                    "executed": [], "traceback": [], "current_inputs": {}, "current_outputs": [],
                    "exception_type": "ModelNotOnWorker", "timestamp": _now_ms(), "worker_id": self.worker_id,
                    "host": self.hostname,
                    "exception_message": (
                        f"worker {self.worker_id!r} on host {self.hostname!r} has no {folder} file {name!r} "
                        f"(looked in {where}). Every worker reads models from the same models/ paths: put the "
                        "file on the storage all nodes share (or the same path on this node).")}
            emit("execution_error", data)
            return ExecutionResult(job.prompt_id, "error", error=data, messages=[("execution_error", data)])
        return None
