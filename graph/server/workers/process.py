"""Local workers: one `spawn`ed process per device, talking to the server over a multiprocessing pipe.

A process per device is the robust choice: each process has its own device policy (`nodes.device`
reads `DIFFLOOM_DEVICE`, and a CUDA worker sees only its own GPU through `CUDA_VISIBLE_DEVICES`),
its own model manager and output cache, real parallelism for CPU workers, and a crash (a segfault,
the OOM killer) takes down one worker, never the server.

Pipe messages, server -> worker: ("run", Job), ("interrupt", prompt_id), ("free", unload, free_memory),
("stop",). Worker -> server: ("ready", info), ("setup_failed", text), ("event", prompt_id, event, data),
("done", JobResult), ("freed", info). A worker whose server goes away (the pipe closes) exits.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import queue
import re
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ..options import ServerOptions
from .protocol import Job, JobResult, OnEvent, WorkerLost, WorkerStartError

log = logging.getLogger(__name__)

_CUDA = re.compile(r"^cuda(?::(\d+))?$")
FREE_TIMEOUT_SECONDS = 120.0


def device_environment(device: str, *, cpu_workers: int = 1, parent: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that pins a worker process to `device` (`cpu`, `cuda:N`, `mps`...), read by nodes.device."""
    parent = dict(os.environ if parent is None else parent)
    env: dict[str, str] = {}
    match = _CUDA.match(device)
    if match is not None:
        # The worker sees only its GPU (as cuda:0), so nothing it runs can touch another worker's card.
        index = int(match.group(1) or 0)
        visible = [v.strip() for v in parent.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if visible and index >= len(visible):
            raise ValueError(f"device {device!r}: CUDA_VISIBLE_DEVICES={parent['CUDA_VISIBLE_DEVICES']!r} "
                             f"lists only {len(visible)} GPU(s)")
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
        env["DIFFLOOM_DEVICE"] = "cuda:0"
    else:
        env["DIFFLOOM_DEVICE"] = device
    if device == "cpu" and "DIFFLOOM_THREADS" not in parent:
        # CPU workers share the cores: without a split, N workers x all cores threads thrash.
        env["DIFFLOOM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, cpu_workers)))
    return env


def _picklable(data: dict[str, Any]) -> dict[str, Any]:
    """Event data as plain JSON types when something in it does not pickle."""
    return json.loads(json.dumps(data, default=str))


def child_main(conn: Connection, options: ServerOptions, worker_id: str, setup: str, env: dict[str, str]) -> None:
    """The worker process: build the runtime, then run jobs from the pipe until told to stop."""
    os.environ.update(env)
    from .host import WorkerHost  # noqa: PLC0415 - after the environment is set

    logging.basicConfig(level=getattr(logging, options.verbose, logging.INFO),
                        format=f"%(asctime)s %(levelname)s [{worker_id}] %(name)s: %(message)s")
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # unpicklable event data
                if message[0] != "event":
                    raise
                log.debug("event %s does not pickle (%s); sent as JSON", message[2], exc)
                conn.send((*message[:3], _picklable(message[3])))

    try:
        host = WorkerHost(options, worker_id, setup)
    except BaseException:  # noqa: BLE001 - the server must hear why, then this process ends
        send(("setup_failed", traceback.format_exc()))
        conn.close()
        return
    send(("ready", host.info()))
    work: queue.Queue[tuple[Any, ...]] = queue.Queue()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("stop",)  # the server is gone: stop whatever runs and exit
            if message[0] == "interrupt":
                host.interrupt(message[1])
                continue
            if message[0] == "stop":
                host.interrupt_running()
            work.put(message)
            if message[0] == "stop":
                return

    threading.Thread(target=read, name=f"diffloom-{worker_id}-pipe", daemon=True).start()
    while True:
        message = work.get()
        kind = message[0]
        if kind == "stop":
            break
        try:
            if kind == "run":
                job: Job = message[1]
                result = host.run(job, lambda event, data, pid=job.prompt_id: send(("event", pid, event, data)))
                send(("done", result))
            elif kind == "free":
                send(("freed", host.free(bool(message[1]), bool(message[2]))))
        except (BrokenPipeError, EOFError, OSError):
            break
    conn.close()


class ProcessWorker:
    """A worker process on this machine (the server side of the pipe); see `WorkerBackend`."""

    def __init__(self, worker_id: str, device: str, options: ServerOptions, setup: str,
                 env: dict[str, str] | None = None) -> None:
        self.worker_id = worker_id
        self.device = device
        self.options = options
        self.setup = setup
        self.env = dict(env or {})
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._send_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float) -> dict[str, Any]:
        self.close(5.0)
        context = multiprocessing.get_context("spawn")  # never fork a process that holds threads and CUDA
        parent, child = context.Pipe(duplex=True)
        self._inbox = queue.Queue()
        proc = context.Process(target=child_main, args=(child, self.options, self.worker_id, self.setup, self.env),
                               name=f"diffloom-{self.worker_id}", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        threading.Thread(target=self._read, args=(parent, self._inbox), name=f"diffloom-{self.worker_id}-reader",
                         daemon=True).start()
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerStartError(f"worker {self.worker_id} ({self.device}) did not get ready within {timeout:.0f} s") from None
        if message[0] == "ready":
            return dict(message[1])
        self.close(5.0)
        if message[0] == "setup_failed":
            raise WorkerStartError(f"worker {self.worker_id} ({self.device}) failed to set up:\n{message[1]}")
        raise WorkerStartError(f"worker {self.worker_id} ({self.device}) exited while starting "
                               f"(exit code {proc.exitcode})")

    def _read(self, conn: Connection, inbox: queue.Queue[tuple[Any, ...]]) -> None:
        while True:
            try:
                inbox.put(conn.recv())
            except (EOFError, OSError):
                inbox.put(("lost",))
                return

    def _send(self, message: tuple[Any, ...]) -> None:
        conn = self._conn
        if conn is None:
            raise WorkerLost(f"worker {self.worker_id} is not running")
        try:
            with self._send_lock:
                conn.send(message)
        except (OSError, EOFError, ValueError) as exc:
            raise WorkerLost(f"worker {self.worker_id}: the pipe to its process broke ({exc})") from exc

    def _lost(self) -> WorkerLost:
        proc = self._proc
        if proc is not None:
            proc.join(2.0)
        code = None if proc is None else proc.exitcode
        return WorkerLost(f"worker process {self.worker_id} ({self.device}, pid {self.pid}) ended"
                          + (f" with exit code {code}" if code is not None else ""))

    def run(self, job: Job, on_event: OnEvent) -> JobResult:
        self._send(("run", job))
        while True:
            message = self._inbox.get()
            kind = message[0]
            if kind == "event" and message[1] == job.prompt_id:
                on_event(message[2], message[3])
            elif kind == "done":
                return message[1]
            elif kind == "lost":
                raise self._lost()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def interrupt(self, prompt_id: str) -> None:
        try:
            self._send(("interrupt", prompt_id))
        except WorkerLost:
            pass  # a dead worker runs nothing; the slot notices on its own

    def free(self, unload_models: bool, free_memory: bool) -> dict[str, Any]:
        self._send(("free", unload_models, free_memory))
        deadline = time.monotonic() + FREE_TIMEOUT_SECONDS
        while True:
            try:
                message = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise WorkerLost(f"worker {self.worker_id} did not answer a free request within "
                                 f"{FREE_TIMEOUT_SECONDS:.0f} s") from None
            if message[0] == "freed":
                return dict(message[1])
            if message[0] == "lost":
                raise self._lost()

    def close(self, timeout: float) -> None:
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        if proc.is_alive() and conn is not None:
            try:
                with self._send_lock:
                    conn.send(("stop",))
            except (OSError, EOFError, ValueError):
                pass
            proc.join(timeout)
        if proc.is_alive():
            log.warning("worker %s did not stop within %.0f s; killing it", self.worker_id, timeout)
            self.kill()
        if conn is not None:
            conn.close()
        self._proc, self._conn = None, None

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(10.0)
