"""The durable queue across kill -9: queued prompts run after a restart, the running one is marked
interrupted (or re-queued with --requeue-on-crash), history survives, outputs are whole files."""
from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from tests.server.server_harness import ServerProcess, image_prompt, wait_until


def running(server: ServerProcess, prompt_id: str) -> bool:
    return server.get(f"/api/jobs/{prompt_id}").json().get("status") == "in_progress"


def outputs_are_whole(server: ServerProcess, entry: dict) -> None:
    for image in entry["outputs"]["3"]["images"]:
        with Image.open(server.base / "output" / image["filename"]) as img:
            img.load()  # raises on a truncated file


def test_kill_9_then_restart_runs_everything_queued(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "base").start()
    try:
        done_before = server.queue(image_prompt(value=0.01, prefix="before"))
        server.wait_history(done_before)
        long_one = server.queue(image_prompt(value=0.02, steps=40, delay=0.05, prefix="long"))
        wait_until(lambda: running(server, long_one), what="the long prompt running")
        waiting = [server.queue(image_prompt(value=0.03 + i / 100, prefix=f"queued{i}")) for i in range(3)]
        assert server.get("/prompt").json()["exec_info"]["queue_remaining"] == 4
        time.sleep(0.3)  # a few sampler steps into the long prompt
        server.kill()

        server.start()
        # the queued prompts ran, in order, after the restart
        entries = [server.wait_history(pid) for pid in waiting]
        assert all(e["status"]["status_str"] == "success" for e in entries)
        finished = list(server.get("/history").json())
        assert [pid for pid in finished if pid in waiting] == waiting
        for entry in entries:
            outputs_are_whole(server, entry)
        # the one running at the crash is interrupted, with the reason, and can be queued again
        crashed = server.wait_history(long_one)
        name, data = crashed["status"]["messages"][-1]
        assert name == "execution_interrupted" and "server stopped" in data["reason"]
        assert server.get(f"/api/jobs/{long_one}").json()["status"] == "cancelled"
        # history from before the crash is still there
        assert server.get(f"/history/{done_before}").json()[done_before]["status"]["status_str"] == "success"
        assert server.post(f"/api/jobs/{long_one}/requeue").status == 200
        rerun = wait_until(lambda: server.get(f"/history/{long_one}").json().get(long_one), timeout=60,
                           what="the re-queued prompt finished")
        assert rerun["status"]["status_str"] == "success"
        outputs_are_whole(server, rerun)
        assert server.get("/prompt").json()["exec_info"]["queue_remaining"] == 0
    finally:
        server.stop()


def test_requeue_on_crash_and_history_retention(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "base", "--requeue-on-crash", "--history-max", "2").start()
    try:
        quick = [server.queue(image_prompt(value=0.05 + i / 100, prefix="keep")) for i in range(3)]
        server.wait_history(quick[-1])
        assert list(server.get("/history").json()) == quick[1:]  # only the newest 2 are kept
        long_one = server.queue(image_prompt(value=0.04, steps=40, delay=0.05, prefix="retry"))
        wait_until(lambda: running(server, long_one), what="the long prompt running")
        server.kill()
        server.start()
        entry = server.wait_history(long_one, timeout=60)
        assert entry["status"]["status_str"] == "success"
        notes = [m[0] for m in entry["status"]["messages"]]
        assert notes[0] == "execution_requeued" and notes[-1] == "execution_success"
        # the limit holds across the restart too
        assert list(server.get("/history").json()) == [quick[-1], long_one]
    finally:
        server.stop()
