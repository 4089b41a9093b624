"""`server.py --devices cpu,cpu`: two worker processes behind the one queue, API and websocket.

Prompts run at once on both workers with their events and files as usual; an interrupt reaches the
worker running its prompt; a worker killed mid-prompt has its prompt re-queued once and run by the
other worker, a second death fails it with the reason, and killed workers come back and take work.
"""
from __future__ import annotations

import asyncio
import os
import signal

import aiohttp

from tests.server.server_harness import ServerProcess, Socket, image_prompt, wait_until
from tests.server.workers.pool_harness import ran_on, wait_workers_ready, worker_running, workers


def job(server: ServerProcess, prompt_id: str) -> dict:
    return server.get(f"/api/jobs/{prompt_id}").json()


def test_two_workers_run_prompts_at_once_and_both_are_used(pool_server: ServerProcess) -> None:
    before = {w["worker_id"]: w["prompts_run"] for w in workers(pool_server)}

    async def scenario() -> dict[str, list[tuple[str, dict]]]:
        async with aiohttp.ClientSession() as session:
            sock = Socket(await session.ws_connect(pool_server.ws_url + "?clientId=both"))
            await sock.next_event()
            ids = [pool_server.queue(image_prompt(value=0.1 * (i + 1), steps=8, delay=0.1, prefix=f"both{i}"),
                                     client_id="both") for i in range(4)]
            done: set[str] = set()

            def all_done(kind: str, data: dict) -> bool:  # they finish in any order: they run side by side
                if kind == "executing" and data.get("node") is None:
                    done.add(data.get("prompt_id"))
                return done >= set(ids)

            await sock.until(all_done, timeout=120)
            per_prompt = {pid: [(k, d) for k, d in sock.events if d.get("prompt_id") == pid] for pid in ids}
            await sock.ws.close()
            assert len(sock.frames) >= 4 * 8  # a preview per progress step, streamed back from the workers
            return per_prompt

    per_prompt = asyncio.run(scenario())
    for pid, events in per_prompt.items():
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "execution_start" and "execution_success" in kinds
        assert [d["value"] for k, d in events if k == "progress"] == list(range(1, 9))
        executed = next(d for k, d in events if k == "executed")
        image = executed["output"]["images"][0]
        assert (pool_server.base / "output" / image["filename"]).is_file()
        entry = pool_server.wait_history(pid)
        assert entry["status"]["status_str"] == "success" and entry["outputs"]["3"] == executed["output"]
    spans = sorted((job(pool_server, pid)["execution_start_time"], job(pool_server, pid)["execution_end_time"])
                   for pid in per_prompt)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # some ran at the same time
    after = {w["worker_id"]: w["prompts_run"] for w in workers(pool_server)}
    assert all(after[w] > before[w] for w in after) and sum(after.values()) - sum(before.values()) == 4
    assert {ran_on(pool_server, pid) for pid in per_prompt} == set(after)


def test_an_interrupt_reaches_the_worker_that_runs_the_prompt(pool_server: ServerProcess) -> None:
    keep = pool_server.queue(image_prompt(value=0.2, steps=60, delay=0.05, prefix="keep"))
    stop = pool_server.queue(image_prompt(value=0.3, steps=400, delay=0.05, prefix="stop"))
    running = worker_running(pool_server, stop, node="2")
    assert worker_running(pool_server, keep)["worker_id"] != running["worker_id"]
    assert pool_server.post("/interrupt", {"prompt_id": stop}).status == 200
    stopped = pool_server.wait_history(stop)
    assert stopped["status"]["messages"][-1][0] == "execution_interrupted"
    assert job(pool_server, stop)["status"] == "cancelled"
    assert pool_server.wait_history(keep)["status"]["status_str"] == "success"
    assert ran_on(pool_server, stop) == running["worker_id"]


def test_a_killed_worker_s_prompt_runs_again_on_the_other_worker(pool_server: ServerProcess) -> None:
    restarts = {w["worker_id"]: w["restarts"] for w in workers(pool_server)}
    long_one = pool_server.queue(image_prompt(value=0.4, steps=30, delay=0.05, prefix="crash"))
    victim = worker_running(pool_server, long_one, node="2")
    others = [pool_server.queue(image_prompt(value=0.5 + i / 100, steps=2, prefix=f"after{i}")) for i in range(3)]
    os.kill(victim["pid"], signal.SIGKILL)

    entry = pool_server.wait_history(long_one)
    assert entry["status"]["status_str"] == "success"
    name, note = entry["status"]["messages"][0]
    assert name == "execution_requeued" and note["retry"] == 1 and note["previous_worker"] == victim["worker_id"]
    assert "died while running this prompt" in note["reason"]
    assert [kind for kind, _ in entry["status"]["messages"]][-1] == "execution_success"
    assert ran_on(pool_server, long_one) != victim["worker_id"] and job(pool_server, long_one)["retries"] == 1
    assert all(pool_server.wait_history(pid)["status"]["status_str"] == "success" for pid in others)
    for image in entry["outputs"]["3"]["images"]:
        assert (pool_server.base / "output" / image["filename"]).is_file()

    # the killed worker comes back (a new process) and takes prompts again
    restarts[victim["worker_id"]] += 1
    back = wait_workers_ready(pool_server, restarts=restarts)
    assert next(w for w in back if w["worker_id"] == victim["worker_id"])["pid"] != victim["pid"]
    pair = [pool_server.queue(image_prompt(value=0.6, steps=10, delay=0.05, prefix=f"rejoin{i}")) for i in range(2)]
    assert all(pool_server.wait_history(pid)["status"]["status_str"] == "success" for pid in pair)
    assert {ran_on(pool_server, pid) for pid in pair} == set(restarts)


def test_a_prompt_whose_workers_die_twice_fails_with_the_reason(pool_server: ServerProcess) -> None:
    restarts = {w["worker_id"]: w["restarts"] for w in workers(pool_server)}
    doomed = pool_server.queue(image_prompt(value=0.7, steps=300, delay=0.05, prefix="doomed"))
    first = worker_running(pool_server, doomed, node="2")
    os.kill(first["pid"], signal.SIGKILL)
    wait_until(lambda: job(pool_server, doomed)["status"] == "pending" or
               any(w["running_prompt"] == doomed and w["worker_id"] != first["worker_id"] for w in workers(pool_server)),
               what="the prompt re-queued")
    second = worker_running(pool_server, doomed, node="2")
    assert second["worker_id"] != first["worker_id"]
    os.kill(second["pid"], signal.SIGKILL)

    entry = pool_server.wait_history(doomed)
    assert entry["status"]["status_str"] == "error"
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert kinds[0] == "execution_requeued" and kinds[-1] == "execution_error"
    error = entry["status"]["messages"][-1][1]
    assert error["exception_type"] == "WorkerLost"
    assert second["worker_id"] in error["exception_message"] and "already retried 1 time(s)" in error["exception_message"]
    assert job(pool_server, doomed)["status"] == "failed"

    for worker_id in (first["worker_id"], second["worker_id"]):
        restarts[worker_id] += 1
    wait_workers_ready(pool_server, restarts=restarts)
    assert pool_server.wait_history(pool_server.queue(image_prompt(value=0.8, prefix="again")))["status"]["status_str"] == "success"


def test_free_reaches_every_worker(pool_server: ServerProcess) -> None:
    pool_server.wait_history(pool_server.queue(image_prompt(value=0.9, prefix="cached")))
    assert any(w["cache"]["entries"] for w in workers(pool_server))
    assert pool_server.post("/free", {"free_memory": True, "unload_models": True}).status == 200
    wait_until(lambda: all(w["cache"]["entries"] == 0 for w in workers(pool_server)), what="every worker's cache empty")


def test_a_worker_killed_while_idle_comes_back_without_touching_the_queue(pool_server: ServerProcess) -> None:
    before = {w["worker_id"]: w for w in workers(pool_server)}
    idle = next(iter(before.values()))
    os.kill(idle["pid"], signal.SIGKILL)
    restarts = {w: info["restarts"] for w, info in before.items()}
    restarts[idle["worker_id"]] += 1
    back = {w["worker_id"]: w for w in wait_workers_ready(pool_server, restarts=restarts)}
    assert back[idle["worker_id"]]["pid"] != idle["pid"]
    assert "died while idle" in pool_server.log()
    assert pool_server.get("/prompt").json()["exec_info"]["queue_remaining"] == 0
    pid = pool_server.queue(image_prompt(value=0.95, prefix="after-idle"))
    entry = pool_server.wait_history(pid)
    assert entry["status"]["status_str"] == "success"
    assert [m[0] for m in entry["status"]["messages"]][0] == "execution_start"  # not a retry


def test_a_prompt_stopped_by_a_shutdown_runs_again_after_the_restart(pool_server: ServerProcess) -> None:
    stopped = pool_server.queue(image_prompt(value=0.15, steps=300, delay=0.05, prefix="shutdown"))
    worker_running(pool_server, stopped, node="2")
    assert pool_server.stop() == 0  # SIGTERM: the running prompt is interrupted and stays queued
    pool_server.start()
    wait_workers_ready(pool_server)
    entry = pool_server.wait_history(stopped, timeout=120)
    assert entry["status"]["status_str"] == "success"
    name, note = entry["status"]["messages"][0]
    assert name == "execution_requeued" and "server stopped" in note["reason"]
