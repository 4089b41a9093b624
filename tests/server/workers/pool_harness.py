"""Helpers for the worker-pool tests: the pool's workers as /system_stats shows them, waiting on their states."""
from __future__ import annotations

from typing import Any

from tests.server.server_harness import ServerProcess, wait_until


def workers(server: ServerProcess) -> list[dict[str, Any]]:
    """The pool's workers (id, state, pid, running prompt, restarts...) from /system_stats."""
    return server.get("/system_stats").json()["diffloom"]["worker"]["workers"]


def wait_workers_ready(server: ServerProcess, *, restarts: dict[str, int] | None = None, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Wait until every worker is ready (and has restarted at least as often as `restarts` says)."""
    def ready() -> list[dict[str, Any]] | None:
        found = workers(server)
        if all(w["state"] in ("ready", "busy") and w["restarts"] >= (restarts or {}).get(w["worker_id"], 0)
               for w in found):
            return found
        return None

    return wait_until(ready, timeout, "every worker ready")


def worker_running(server: ServerProcess, prompt_id: str, node: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """The worker that runs prompt_id (once it has reached `node`, if given)."""
    def find() -> dict[str, Any] | None:
        for worker in workers(server):
            if worker["running_prompt"] == prompt_id and (node is None or worker["running_node"] == node):
                return worker
        return None

    return wait_until(find, timeout, f"prompt {prompt_id} running on a worker")


def ran_on(server: ServerProcess, prompt_id: str) -> str:
    """The worker that ran prompt_id, as its job record says."""
    return server.get(f"/api/jobs/{prompt_id}").json()["worker_id"]
