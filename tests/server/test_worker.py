"""The worker on an in-process app: prompts that no longer validate, free requests, and the store it records to."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from graph.registry import NodeRegistry
from graph.server import STATE, BackgroundServer, ServerOptions, ServerRuntime, create_app
from nodes.folders import FolderPaths
from tests.server import server_nodes
from tests.server.server_harness import Socket, http, image_prompt, wait_history, wait_until


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    base = tmp_path_factory.mktemp("worker")
    registry = NodeRegistry()
    registry.add_module(server_nodes)
    app = create_app(ServerOptions(base_directory=base), registry, FolderPaths(base, create_dirs=True))
    with BackgroundServer(app) as running:
        yield running


def test_a_prompt_that_no_longer_validates_fails_with_the_reasons(app_server: BackgroundServer) -> None:
    store = app_server.app[STATE].store
    stale = image_prompt()
    stale["2"]["inputs"]["steps"] = -3  # as if a rule changed (or a model file vanished) after it was queued

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock = Socket(await session.ws_connect(app_server.ws_url + "?clientId=stale"))
            await sock.next_event()
            # straight into the durable queue, as a prompt accepted before a restart would be
            item = store.add(stale, outputs_to_execute=["3"], extra_data={"client_id": "stale"})
            events = await sock.until_done(item.prompt_id)
            error = next(d for k, d in events if k == "execution_error")
            assert error["exception_type"] == "ValidationError" and error["node_id"] == "2"
            assert "input 'steps' is -3, must be >= 1" in error["exception_message"]
            assert error["node_errors"]["2"]["errors"][0]["type"] == "value_smaller_than_min"
            await sock.ws.close()
            entry = wait_history(app_server.url, item.prompt_id)
            assert entry["status"]["status_str"] == "error"
            assert entry["status"]["messages"][-1][0] == "execution_error"

    asyncio.run(scenario())


def test_free_waits_for_the_running_prompt(app_server: BackgroundServer) -> None:
    state = app_server.app[STATE]
    reply = http("POST", app_server.url + "/prompt", {"prompt": image_prompt(value=0.3, steps=30, delay=0.05)})
    prompt_id = reply.json()["prompt_id"]
    wait_until(lambda: state.worker.now_executing()[1] == "2", what="the slow node running")
    entries = len(state.executor.cache)
    assert entries >= 1  # TestImage's output
    http("POST", app_server.url + "/free", {"free_memory": True})
    assert len(state.executor.cache) == entries  # not in the middle of a prompt
    wait_history(app_server.url, prompt_id)
    wait_until(lambda: len(state.executor.cache) == 0, what="the cache emptied after the prompt")


def test_worker_status_and_stop(tmp_path: Path) -> None:
    registry = NodeRegistry()
    registry.add_module(server_nodes)
    app = create_app(ServerOptions(base_directory=tmp_path), registry, FolderPaths(tmp_path, create_dirs=True))
    worker = app[STATE].worker
    with BackgroundServer(app):
        assert worker.alive and worker.status()["running_prompt"] is None
        assert worker.interrupt() is False  # nothing to interrupt
    assert not worker.alive and app[STATE].store.closed


def run_a_prompt_with_warm_up(base: Path, warm_up: Callable[[], None]) -> dict:
    """An in-process app whose worker warms up with `warm_up` runs one prompt; its job record."""
    registry = NodeRegistry()
    registry.add_module(server_nodes)
    app = create_app(ServerOptions(base_directory=base), registry, FolderPaths(base, create_dirs=True),
                     runtime=ServerRuntime(warm_up=warm_up))
    with BackgroundServer(app) as running:
        prompt_id = http("POST", running.url + "/prompt", {"prompt": image_prompt()}).json()["prompt_id"]
        assert wait_history(running.url, prompt_id)["status"]["status_str"] == "success"
        return http("GET", f"{running.url}/api/jobs/{prompt_id}").json()


def test_the_worker_warms_up_on_its_thread_before_its_first_prompt(tmp_path: Path) -> None:
    calls: list[tuple[str, float]] = []

    def warm_up() -> None:
        calls.append((threading.current_thread().name, time.time()))
        time.sleep(0.3)  # as importing diffusers would: the first prompt waits for it, the server does not

    job = run_a_prompt_with_warm_up(tmp_path, warm_up)
    [(thread, warmed_at)] = calls
    assert thread == "diffloom-worker-local"
    assert job["execution_start_time"] / 1000 >= warmed_at + 0.3


def test_a_failing_warm_up_is_logged_and_prompts_still_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def warm_up() -> None:
        raise ImportError("no diffusers here")

    assert run_a_prompt_with_warm_up(tmp_path, warm_up)["status"] == "completed"
    assert "warming up failed" in caplog.text and "no diffusers here" in caplog.text
