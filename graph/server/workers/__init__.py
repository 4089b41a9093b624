"""Beyond one device: several workers fed from the one durable queue, as local processes or Ray actors.

    python server.py --devices cuda:0,cuda:1       # one worker process per GPU on this machine
    python server.py --devices cpu,cpu             # two CPU worker processes (tests, small machines)
    python server.py --ray-address auto            # one Ray actor per GPU of the Ray cluster

The server stays the only front door (HTTP, websocket, history, output files); `WorkerPool` takes
the place of the in-process `PromptWorker` and hands whole prompts to workers, preferring the one
that holds the prompt's checkpoint. Each worker (`WorkerHost`, in a `spawn`ed process or a Ray
actor) builds its runtime with the `module:function` setup the server names (`server:build_runtime`)
and keeps its models and cache resident. `ray` is imported only when Ray workers are asked for.
"""
from __future__ import annotations

from typing import Any

from ...prompt_store import PromptStore
from ..options import ServerOptions
from ..websocket import ClientHub
from .affinity import held_model_keys, model_keys, model_names
from .pool import WorkerPool, WorkerSlot
from .process import ProcessWorker, device_environment
from .protocol import Job, JobResult, WorkerBackend, WorkerLost, WorkerStartError

__all__ = ["Job", "JobResult", "ProcessWorker", "WorkerBackend", "WorkerLost", "WorkerPool", "WorkerSlot",
           "WorkerStartError", "build_pool", "device_environment", "held_model_keys", "model_keys", "model_names",
           "wants_pool"]


def wants_pool(options: ServerOptions) -> bool:
    """True when the flags ask for worker processes or Ray actors instead of the in-process worker."""
    return bool(options.devices) or bool(options.ray_address)


def local_backends(options: ServerOptions, setup: str) -> list[ProcessWorker]:
    """One worker process per --devices entry, each pinned to its device."""
    cpu_workers = sum(1 for d in options.devices if d == "cpu")
    return [ProcessWorker(f"w{i}-{device}", device, options, setup,
                          env=device_environment(device, cpu_workers=cpu_workers))
            for i, device in enumerate(options.devices)]


def ray_backends(options: ServerOptions, setup: str) -> list[Any]:
    """Join the Ray cluster and describe one actor per GPU (or --ray-workers actors)."""
    from .ray_actor import RayWorker, cluster_gpus  # noqa: PLC0415 - ray only when asked for

    gpus = cluster_gpus()
    per_worker = options.ray_gpus_per_worker if options.ray_gpus_per_worker is not None else (1.0 if gpus else 0.0)
    count = options.ray_workers or (int(gpus // per_worker) if gpus and per_worker else 1)
    return [RayWorker(f"ray-{i}", options, setup, num_gpus=per_worker, num_cpus=options.ray_cpus_per_worker)
            for i in range(count)]


def build_pool(options: ServerOptions, store: PromptStore, hub: ClientHub, setup: str | None) -> WorkerPool:
    """The pool the flags describe (--devices or --ray-address); Ray is joined when the pool starts."""
    if not setup:
        raise ValueError("--devices and --ray-address need a worker setup ('module:function' building the nodes "
                         "and models in each worker, like 'server:build_runtime'); create_app(worker_setup=...) "
                         "was not given one")
    if options.devices:
        backends = local_backends(options, setup)
        return WorkerPool(store, hub, backends, kind="processes", preview_size=options.preview_size)
    from .ray_actor import connect  # noqa: PLC0415

    joined: list[bool] = []

    def make() -> list[Any]:
        joined.append(connect(options.ray_address))
        return ray_backends(options, setup)

    def leave() -> None:
        if joined and joined[0]:
            from .ray_actor import import_ray  # noqa: PLC0415

            import_ray().shutdown()

    return WorkerPool(store, hub, make, kind="ray", preview_size=options.preview_size, on_stop=leave)
