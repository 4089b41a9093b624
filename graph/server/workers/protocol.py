"""What the server and a worker (process or Ray actor) exchange: jobs, results, worker facts, failures.

Everything here pickles (it crosses a multiprocessing pipe or Ray's object store) and imports only
the standard library. A job is one whole prompt; events stream back while it runs as
`(event, data)` pairs, previews already encoded as JPEG/PNG bytes; the result closes it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

OnEvent = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Job:
    """One prompt for a worker to run to its end."""

    prompt_id: str
    prompt: dict[str, Any]
    targets: list[str]
    extra_data: dict[str, Any]


@dataclass
class JobResult:
    """How a job ended on its worker (status success, error or interrupted) and what it produced."""

    prompt_id: str
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    duration: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # the worker's facts after the job (WorkerHost.info)


class WorkerLost(RuntimeError):
    """The worker process or actor died, or its connection broke, while the server needed it."""


class WorkerStartError(RuntimeError):
    """A worker could not be started (its setup raised, its device is missing, no resources...)."""


class WorkerBackend(Protocol):
    """One execution place the pool drives: a local process (`process.py`) or a Ray actor (`ray_actor.py`).

    `run`, `free` and `start` are called from one thread (the pool's slot thread); `interrupt` from
    any thread, at any time, also before the job it names has arrived.
    """

    worker_id: str
    device: str

    def start(self, timeout: float) -> dict[str, Any]:
        """Start the worker and wait until it can run jobs; its facts (WorkerHost.info). WorkerStartError."""
        ...

    def run(self, job: Job, on_event: OnEvent) -> JobResult:
        """Run a job to its end, calling on_event for each event; WorkerLost if the worker dies meanwhile."""
        ...

    def alive(self) -> bool:
        """False once the worker is known to be dead (asked now and then while it is idle)."""
        ...

    def interrupt(self, prompt_id: str) -> None:
        """Ask the worker to stop prompt_id at its next node or progress step (no answer awaited)."""
        ...

    def free(self, unload_models: bool, free_memory: bool) -> dict[str, Any]:
        """Free models and/or the output cache now (between jobs); the worker's facts after."""
        ...

    def close(self, timeout: float) -> None:
        """Stop the worker (killed if it does not stop within timeout). Safe to call twice."""
        ...

    def kill(self) -> None:
        """End the worker at once, as a crash would (tests and stuck workers)."""
        ...
