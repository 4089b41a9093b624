"""Workers as long-lived Ray actors: one per GPU (`num_gpus=1`) on a Ray cluster, driven like local processes.

`ray` is optional and imported only here, only when `--ray-address` asks for it. Each actor builds
its runtime once (the same `WorkerHost` as a local worker process) and keeps models and cached
results between prompts. A prompt runs as a streaming generator method: events (previews as JPEG
or PNG bytes) come back while it runs, the result last; an interrupt is a second, concurrent call
(the actor is threaded). The actor writes outputs to the folders in the server's options, which
every node must see at the same paths (shared storage), and reads models from the same `models/`.
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import threading
from pathlib import Path
from typing import Any

from ..options import ServerOptions
from .host import WorkerHost
from .protocol import Job, JobResult, OnEvent, WorkerLost, WorkerStartError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
# Calls an actor serves at once: one prompt, plus interrupts, frees and info while it runs.
ACTOR_CONCURRENCY = 4
FREE_TIMEOUT_SECONDS = 120.0
PING_TIMEOUT_SECONDS = 30.0
# Passed from the server's environment to every actor (the rest of a node's environment is its own).
PASSED_ENV_PREFIXES = ("GOMP_", "OMP_", "MKL_", "HF_", "TRANSFORMERS_", "DIFFUSERS_", "PYTORCH_")
PASSED_ENV_EXCLUDED = frozenset({"HF_TOKEN"})


def import_ray() -> Any:
    """The ray module, or an error that says how to install it."""
    try:
        import ray  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise RuntimeError("running workers on Ray (--ray-address) needs the ray package: "
                           "pip install -c constraints.txt 'ray==2.60.0' (or the 'ray' extra of diffloom)") from exc
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` ('local' starts one here); False if this process already had Ray."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        ray.init(include_dashboard=False, namespace="diffloom")
    else:
        ray.init(address=address, namespace="diffloom")
    return True


def cluster_gpus() -> int:
    """Whole GPUs the connected Ray cluster has (0 for a CPU-only cluster)."""
    return int(import_ray().cluster_resources().get("GPU", 0))


def actor_environment(num_gpus: float, num_cpus: float, parent: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables of an actor: the code's path, thread and hub settings, and its device."""
    parent = dict(os.environ if parent is None else parent)
    env = {k: v for k, v in parent.items()
           if k.startswith(PASSED_ENV_PREFIXES) and k not in PASSED_ENV_EXCLUDED}
    env.update({k: v for k, v in parent.items() if k in ("DIFFLOOM_DTYPE", "DIFFLOOM_CHANNELS_LAST", "DIFFLOOM_COMPILE")})
    # diffloom lives at the same path on every node (a container image, or a shared checkout).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), parent.get("PYTHONPATH", "")) if p)
    if num_gpus > 0:
        env["DIFFLOOM_DEVICE"] = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's own GPU(s)
    else:
        env["DIFFLOOM_DEVICE"] = "cpu"
        env.setdefault("DIFFLOOM_THREADS", str(max(1, int(num_cpus))))
    return env


def _sendable(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event as plain JSON types when something in it does not pickle."""
    try:
        pickle.dumps(item)
        return item
    except (pickle.PicklingError, TypeError, AttributeError):
        import json  # noqa: PLC0415

        return (item[0], item[1], json.loads(json.dumps(item[2], default=str)))


class RayWorkerActor:
    """The body of a worker actor (made a Ray actor class with `ray.remote` at run time)."""

    def __init__(self, options: ServerOptions, worker_id: str, setup: str) -> None:
        logging.basicConfig(level=getattr(logging, options.verbose, logging.INFO),
                            format=f"%(asctime)s %(levelname)s [{worker_id}] %(name)s: %(message)s")
        self.host = WorkerHost(options, worker_id, setup)

    def info(self) -> dict[str, Any]:
        import ray  # noqa: PLC0415 - inside an actor ray is there

        return {**self.host.info(), "node_ip": ray.util.get_node_ip_address()}

    def run(self, job: Job) -> Any:
        """Yield ("event", event, data) while the prompt runs, then ("done", JobResult)."""
        items: queue.Queue[tuple[Any, ...]] = queue.Queue()

        def work() -> None:
            try:
                result = self.host.run(job, lambda event, data: items.put(("event", event, data)))
                result.info = self.info()
            except BaseException as exc:  # noqa: BLE001 - the caller must get an end, whatever happens
                message = f"worker {self.host.worker_id}: {type(exc).__name__}: {exc}"
                result = JobResult(job.prompt_id, "error", error={"prompt_id": job.prompt_id, "exception_message": message,
                                                                  "exception_type": type(exc).__name__})
            items.put(("done", result))

        threading.Thread(target=work, name=f"diffloom-{job.prompt_id}", daemon=True).start()
        while True:
            item = items.get()
            yield _sendable(item) if item[0] == "event" else item
            if item[0] == "done":
                return

    def interrupt(self, prompt_id: str) -> bool:
        return self.host.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> dict[str, Any]:
        self.host.free(unload_models, free_memory)
        return self.info()

    def pid(self) -> int:
        return os.getpid()


class RayWorker:
    """A worker actor on the Ray cluster (the server's side of it); see `WorkerBackend`."""

    def __init__(self, worker_id: str, options: ServerOptions, setup: str, *, num_gpus: float = 1.0,
                 num_cpus: float = 1.0, env: dict[str, str] | None = None) -> None:
        self.worker_id = worker_id
        self.options = options
        self.setup = setup
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.device = f"ray:{'gpu' if num_gpus > 0 else 'cpu'}"
        self.env = dict(env) if env is not None else actor_environment(num_gpus, num_cpus)
        self._actor: Any = None

    @property
    def actor(self) -> Any:
        return self._actor

    def start(self, timeout: float) -> dict[str, Any]:
        ray = import_ray()
        self.close(5.0)
        actor_class = ray.remote(RayWorkerActor)
        self._actor = actor_class.options(
            num_gpus=self.num_gpus, num_cpus=self.num_cpus, max_concurrency=ACTOR_CONCURRENCY, max_restarts=0,
            runtime_env={"env_vars": self.env}).remote(self.options, self.worker_id, self.setup)
        try:
            info = ray.get(self._actor.info.remote(), timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            self.kill()
            raise WorkerStartError(
                f"Ray actor {self.worker_id} did not get ready within {timeout:.0f} s: the cluster may lack a "
                f"free {'GPU' if self.num_gpus > 0 else 'CPU'} (it asked for num_gpus={self.num_gpus}, "
                f"num_cpus={self.num_cpus})") from None
        except ray.exceptions.RayError as exc:
            self._actor = None
            raise WorkerStartError(f"Ray actor {self.worker_id} failed to start: {exc}") from exc
        self.device = str(info.get("device") or self.device)
        return dict(info)

    def run(self, job: Job, on_event: OnEvent) -> JobResult:
        ray = import_ray()
        if self._actor is None:
            raise WorkerLost(f"Ray actor {self.worker_id} is not running")
        try:
            for ref in self._actor.run.remote(job):
                item = ray.get(ref)
                if item[0] == "event":
                    on_event(item[1], item[2])
                elif item[0] == "done":
                    result: JobResult = item[1]
                    return result
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"Ray actor {self.worker_id} failed while running prompt {job.prompt_id}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        raise WorkerLost(f"Ray actor {self.worker_id} ended prompt {job.prompt_id} without a result")

    def alive(self) -> bool:
        """Ask the actor (an idle actor's death is noticed here, not when it is handed a prompt)."""
        ray = import_ray()
        if self._actor is None:
            return False
        try:
            ray.get(self._actor.pid.remote(), timeout=PING_TIMEOUT_SECONDS)
        except ray.exceptions.GetTimeoutError:
            return True  # busy or slow node: not proof of death
        except ray.exceptions.RayError:
            return False
        return True

    def interrupt(self, prompt_id: str) -> None:
        if self._actor is not None:
            self._actor.interrupt.remote(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> dict[str, Any]:
        ray = import_ray()
        if self._actor is None:
            raise WorkerLost(f"Ray actor {self.worker_id} is not running")
        try:
            return dict(ray.get(self._actor.free.remote(unload_models, free_memory), timeout=FREE_TIMEOUT_SECONDS))
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"Ray actor {self.worker_id} failed to free memory: {exc}") from exc

    def pid(self) -> int | None:
        """The actor's process id (tests kill it to simulate a crash)."""
        if self._actor is None:
            return None
        return int(import_ray().get(self._actor.pid.remote(), timeout=30))

    def close(self, timeout: float) -> None:
        self.kill()

    def kill(self) -> None:
        actor, self._actor = self._actor, None
        if actor is not None:
            try:
                import_ray().kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone, or Ray shut down
                log.debug("Ray actor %s: kill failed", self.worker_id, exc_info=True)
