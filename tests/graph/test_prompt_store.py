"""The durable prompt queue and history: real SQLite files, real threads, real kill -9."""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from graph.prompt_store import (
    CANCEL_FINISHED, CANCEL_PENDING, CANCEL_RUNNING, CANCEL_UNKNOWN, SCHEMA_VERSION,
    DuplicatePromptError, InvalidPromptIdError, PromptStateError, PromptStore, PromptStoreError,
    UnknownPromptError, summarize_outputs, to_history_entry, to_job, to_queue_entry,
)

WRITER = Path(__file__).with_name("prompt_store_writer.py")
PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}},
          "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}}
IMAGE_UI = {"images": [{"filename": "diffloom_00001_.png", "subfolder": "", "type": "output"}]}


@pytest.fixture
def store(tmp_path: Path):
    with PromptStore(tmp_path / "queue.db") as s:
        yield s


def add(store: PromptStore, **kw):
    return store.add(PROMPT, outputs_to_execute=["9"], **kw)


def run_to_end(store: PromptStore, status: str = "success", **kw):
    item = store.claim("w")
    assert item is not None
    return store.finish(item.prompt_id, status, {"9": IMAGE_UI} if status == "success" else {},
                        [["execution_start", {"prompt_id": item.prompt_id, "timestamp": 1}]], **kw)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


# --- file, schema, durability settings ---------------------------------------------------------

def test_file_is_wal_versioned_and_full_sync(tmp_path: Path) -> None:
    s = PromptStore(tmp_path / "q.db")
    assert s.journal_mode == "wal"
    assert s._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    s.close()
    with raw(tmp_path / "q.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_reopen_after_close_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    s = PromptStore(path)
    a, b, c = add(s), add(s), add(s)
    s.claim("w")
    s.finish(a.prompt_id, "success", {"9": IMAGE_UI}, [])
    s.close()
    s.close()  # twice is fine
    with pytest.raises(PromptStoreError, match="closed"):
        s.pending()
    s2 = PromptStore(path)
    assert [i.prompt_id for i in s2.pending()] == [b.prompt_id, c.prompt_id]
    assert s2.history_item(a.prompt_id).outputs == {"9": IMAGE_UI}
    # the number counter keeps rising across restarts, so new prompts queue after old ones
    d = add(s2)
    assert d.number > c.number
    assert [i.prompt_id for i in s2.pending()][-1] == d.prompt_id
    s2.close()


def test_not_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(PromptStoreError) as info:
        PromptStore(path)
    assert str(path) in str(info.value) and "not a usable SQLite database" in str(info.value)


def test_corrupt_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    s = PromptStore(path)
    for _ in range(50):
        add(s)
    s.close()
    data = bytearray(path.read_bytes())
    data[100:] = os.urandom(len(data) - 100)  # keep the header, destroy every page
    path.write_bytes(bytes(data))
    with pytest.raises(PromptStoreError) as info:
        s2 = PromptStore(path)
        s2.pending()
    assert str(path) in str(info.value)


def test_foreign_sqlite_file_and_newer_schema_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    with raw(foreign) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(PromptStoreError, match="photos"):
        PromptStore(foreign)
    newer = tmp_path / "newer.db"
    PromptStore(newer).close()
    with raw(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(PromptStoreError, match="newer"):
        PromptStore(newer)


def test_a_locked_file_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with PromptStore(path, busy_timeout=0.2) as s:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")        # another process holds the write lock
        with pytest.raises(PromptStoreError, match="locked") as info:
            add(s)
        assert str(path) in str(info.value)
        other.execute("ROLLBACK")
        other.close()
        add(s)                                  # and the store works again
        assert s.queue_remaining() == 1


# --- adding and ordering -----------------------------------------------------------------------

def test_order_is_number_then_insertion_and_front_goes_first(store: PromptStore) -> None:
    a = add(store)                     # counter 0
    b = add(store, number=5)
    c = add(store, number=5)           # same number: insertion order
    d = add(store, number=2.5)
    e = add(store)                     # counter 4
    f = add(store, front=True)         # before everything
    g = add(store, front=True)         # a later front goes before the earlier one, as in ComfyUI
    order = [i.prompt_id for i in store.pending()]
    assert order == [g.prompt_id, f.prompt_id, a.prompt_id, d.prompt_id, e.prompt_id, b.prompt_id,
                     c.prompt_id]
    assert (a.number, e.number) == (0, 4) and f.number < 0 and g.number < f.number
    assert isinstance(d.number, float) and store.get(d.prompt_id).number == 2.5
    very_low = add(store, number=-1000)
    h = add(store, front=True)
    assert store.pending()[0].prompt_id == h.prompt_id and h.number < very_low.number
    assert [store.claim("w").prompt_id for _ in range(3)] == [h.prompt_id, very_low.prompt_id, g.prompt_id]


def test_add_returns_the_stored_item_and_strips_secrets(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    s = PromptStore(path)
    pid = str(uuid.uuid4())
    extra = {"client_id": "abc", "extra_pnginfo": {"workflow": {"id": "wf-1", "nodes": []}},
             "auth_token_comfy_org": "SECRET-TOKEN", "api_key_comfy_org": "SECRET-KEY"}
    item = s.add(PROMPT, outputs_to_execute=["9"], extra_data=extra, prompt_id=pid)
    assert item.prompt_id == pid and item.status == "pending" and item.workflow_id == "wf-1"
    assert "auth_token_comfy_org" not in item.extra_data and isinstance(item.extra_data["create_time"], int)
    assert to_queue_entry(item) == [item.number, pid, PROMPT, item.extra_data, ["9"]]
    claimed = s.claim("w")
    # the worker in this process still gets the secrets for the hidden inputs...
    assert claimed.execution_extra_data["api_key_comfy_org"] == "SECRET-KEY"
    done = s.finish(pid, "success", {"9": IMAGE_UI}, [])
    assert done.sensitive == {} and "SECRET" not in json.dumps(to_history_entry(done))
    s.close()
    # ...but they never reach the file (nor its WAL)
    for f in tmp_path.iterdir():
        assert b"SECRET" not in f.read_bytes(), f


def test_generated_ids_are_canonical_and_bad_or_duplicate_ids_refused(store: PromptStore) -> None:
    item = add(store)
    assert str(uuid.UUID(item.prompt_id)) == item.prompt_id
    for bad in ("not-a-uuid", str(uuid.uuid4()).upper(), uuid.uuid4().hex, 42):
        with pytest.raises(InvalidPromptIdError, match="canonical lowercase UUID"):
            add(store, prompt_id=bad)
    with pytest.raises(DuplicatePromptError, match=item.prompt_id):
        add(store, prompt_id=item.prompt_id)
    run_to_end(store)
    with pytest.raises(DuplicatePromptError, match="status success"):
        add(store, prompt_id=item.prompt_id)  # also once it is in history (the server answers 409)
    assert store.queue_remaining() == 0
    for bad_number in (float("nan"), True, "3", 2**70):
        with pytest.raises(ValueError, match="number"):
            add(store, number=bad_number)
    with pytest.raises(ValueError, match="JSON"):
        store.add({"1": {"inputs": {"x": object()}}})
    assert store.queue_remaining() == 0


# --- claiming ------------------------------------------------------------------------------------

def test_claim_marks_running_and_filters(store: PromptStore) -> None:
    a = add(store, extra_data={"model": "sd15"})
    b = add(store, extra_data={"model": "sdxl"})
    c = add(store, extra_data={"model": "sdxl"})
    assert store.claim("w", accept=lambda i: i.extra_data["model"] == "flux") is None
    got = store.claim("gpu1", prefer=lambda i: 0 if i.extra_data["model"] == "sdxl" else 1)
    assert got.prompt_id == b.prompt_id and got.status == "running" and got.worker_id == "gpu1"
    assert got.started_at is not None
    assert store.claim("w", accept=lambda i: i.extra_data["model"] == "sd15").prompt_id == a.prompt_id
    assert [i.prompt_id for i in store.running()] == [b.prompt_id, a.prompt_id]
    assert [i.prompt_id for i in store.pending()] == [c.prompt_id]
    assert store.queue_remaining() == 3
    assert store.claim("w").prompt_id == c.prompt_id and store.claim("w") is None


def test_concurrent_thread_claims_never_double_or_lose(store: PromptStore) -> None:
    ids = {add(store).prompt_id for _ in range(150)}
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(n: int) -> None:
        start.wait()
        while (item := store.claim(f"t{n}")) is not None:
            with lock:
                claimed.append(item.prompt_id)
            store.finish(item.prompt_id, "success", {}, [])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(claimed) == len(set(claimed)) == 150 and set(claimed) == ids
    assert len(store.history()) == 150 and store.queue_remaining() == 0


def test_concurrent_process_claims_never_double_or_lose(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with PromptStore(path) as s:
        ids = {add(s).prompt_id for _ in range(150)}
    start_at = str(time.time() + 1.0)  # all three start claiming at the same moment
    procs = [subprocess.Popen([sys.executable, str(WRITER), str(path), "drain", f"p{n}", start_at],
                              stdout=subprocess.PIPE, text=True) for n in range(3)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    claimed = [line.split()[1] for out in outs for line in out.splitlines()]
    assert len(claimed) == len(set(claimed)) == 150 and set(claimed) == ids
    assert sum(1 for out in outs if out) >= 2  # they really competed
    with PromptStore(path) as s:
        assert {i.prompt_id for i in s.running()} == ids


def test_wait_for_item_wakes_on_add_times_out_and_stops_on_close(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "q.db", wait_poll=30)  # a poll this slow cannot be what wakes it
    t0 = time.monotonic()
    assert store.wait_for_item(0.2) is False
    assert 0.15 < time.monotonic() - t0 < 5
    threading.Timer(0.1, lambda: add(store)).start()
    t0 = time.monotonic()
    assert store.wait_for_item(60) is True
    assert time.monotonic() - t0 < 10    # woken by add's notify, not by the 30 s poll
    # a worker that cannot run what is queued keeps waiting instead of spinning
    assert store.wait_for_item(0.2, accept=lambda item: False) is False
    assert store.wait_for_item(0.2, accept=lambda item: item.prompt == PROMPT) is True
    store.claim("w")
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(store.wait_for_item(None)))
    waiter.start()
    time.sleep(0.1)
    store.close()
    waiter.join(10)
    assert result == [False]


def test_wait_for_item_sees_adds_of_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with PromptStore(path, wait_poll=0.05) as waiting, PromptStore(path) as other:
        threading.Timer(0.1, lambda: add(other)).start()   # a second store object: no shared condition
        assert waiting.wait_for_item(20) is True
        assert waiting.claim("w") is not None


# --- finishing, history --------------------------------------------------------------------------

def test_finish_and_history_entry_shapes(store: PromptStore) -> None:
    ok = add(store, extra_data={"client_id": "c1"})
    bad = add(store)
    stopped = add(store)
    run_to_end(store)
    err = {"prompt_id": bad.prompt_id, "node_id": "3", "node_type": "KSampler", "executed": [],
           "exception_message": "boom", "exception_type": "RuntimeError", "traceback": ["..."],
           "current_inputs": {}, "current_outputs": {}}
    store.claim("w")
    store.finish(bad.prompt_id, "error", {}, [["execution_error", err]], error=err)
    store.claim("w")
    store.finish(stopped.prompt_id, "interrupted", {}, [["execution_interrupted", {"prompt_id": stopped.prompt_id}]])

    entry = to_history_entry(store.history_item(ok.prompt_id))
    assert set(entry) == {"prompt", "outputs", "status", "meta"}
    number, pid, prompt, extra, targets = entry["prompt"]
    assert (number, pid, prompt, targets) == (ok.number, ok.prompt_id, PROMPT, ["9"])
    assert extra["client_id"] == "c1" and "create_time" in extra
    assert entry["outputs"] == {"9": IMAGE_UI}
    assert entry["status"] == {"status_str": "success", "completed": True,
                               "messages": [["execution_start", {"prompt_id": ok.prompt_id, "timestamp": 1}]]}
    assert entry["meta"] == {"9": {"node_id": "9", "display_node": "9", "parent_node": None, "real_node_id": "9"}}
    assert json.loads(json.dumps(entry)) == entry

    bad_entry = to_history_entry(store.history_item(bad.prompt_id))
    assert bad_entry["status"]["status_str"] == "error" and bad_entry["status"]["completed"] is False
    assert to_history_entry(store.history_item(stopped.prompt_id))["status"]["status_str"] == "error"
    assert [i.prompt_id for i in store.history()] == [ok.prompt_id, bad.prompt_id, stopped.prompt_id]
    with pytest.raises(ValueError, match="only finished prompts"):
        to_history_entry(add(store))


def test_finish_refuses_wrong_state_and_unknown_id(store: PromptStore) -> None:
    item = add(store)
    with pytest.raises(PromptStateError, match="is pending"):
        store.finish(item.prompt_id, "success", {}, [])
    with pytest.raises(UnknownPromptError, match="no prompt"):
        store.finish(str(uuid.uuid4()), "success", {}, [])
    with pytest.raises(ValueError, match="must be one of"):
        store.finish(item.prompt_id, "done", {}, [])
    store.claim("w")
    store.finish(item.prompt_id, "success", {}, [])
    with pytest.raises(PromptStateError, match="is success"):
        store.finish(item.prompt_id, "error", {}, [])


def test_history_offset_and_max_items_follow_comfyui(store: PromptStore) -> None:
    ids = []
    for _ in range(6):
        add(store)
        ids.append(run_to_end(store).prompt_id)

    def h(**kw):
        return [i.prompt_id for i in store.history(**kw)]

    assert h() == ids
    assert h(max_items=2) == ids[-2:]               # default offset -1: the last N, oldest first
    assert h(max_items=2, offset=-1) == ids[-2:]
    assert h(max_items=10, offset=-1) == ids
    assert h(offset=-1) == ids
    assert h(max_items=2, offset=1) == ids[1:3]
    assert h(offset=4) == ids[4:]
    assert h(offset=10) == [] and h(max_items=0) == []
    add(store)
    store.claim("w")
    assert h() == ids                               # running prompts are not history
    assert store.history_item(store.running()[0].prompt_id) is None
    assert store.history_item(str(uuid.uuid4())) is None


def test_delete_and_clear_queue_and_history(store: PromptStore) -> None:
    a, b, c = add(store), add(store), add(store)
    running = store.claim("w")
    assert running.prompt_id == a.prompt_id
    assert store.delete_pending([a.prompt_id, b.prompt_id, str(uuid.uuid4())]) == 1  # a is running
    assert [i.prompt_id for i in store.pending()] == [c.prompt_id]
    add(store)
    assert store.clear_pending() == 2 and store.pending() == []
    assert store.queue_remaining() == 1
    store.finish(a.prompt_id, "success", {}, [])
    add(store)
    x = run_to_end(store)
    add(store)
    y = run_to_end(store)
    assert store.delete_history([a.prompt_id, x.prompt_id]) == 2
    assert [i.prompt_id for i in store.history()] == [y.prompt_id]
    keep = add(store)
    assert store.delete_history([keep.prompt_id]) == 0   # a pending prompt is not history
    assert store.clear_history() == 1 and store.history() == []
    assert [i.prompt_id for i in store.pending()] == [keep.prompt_id]


def test_retention_drops_oldest_finished(tmp_path: Path) -> None:
    with PromptStore(tmp_path / "q.db", max_history=3) as s:
        ids = []
        for _ in range(5):
            add(s)
            ids.append(run_to_end(s).prompt_id)
        waiting = add(s)
        assert [i.prompt_id for i in s.history()] == ids[-3:]
        s.cancel(waiting.prompt_id)                  # cancelling also finishes, so also trims
        assert [i.prompt_id for i in s.history()] == ids[-2:] + [waiting.prompt_id]
        assert s.get(ids[0]) is None
        with raw(tmp_path / "q.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 3


def test_cancel_reports_what_it_found(store: PromptStore) -> None:
    a, b = add(store), add(store)
    store.claim("w")
    assert store.cancel(a.prompt_id) == CANCEL_RUNNING
    assert store.get(a.prompt_id).status == "running"    # the caller interrupts; the worker finishes
    assert store.cancel(b.prompt_id) == CANCEL_PENDING
    assert store.cancel(b.prompt_id) == CANCEL_FINISHED
    assert store.cancel(str(uuid.uuid4())) == CANCEL_UNKNOWN
    cancelled = store.history_item(b.prompt_id)
    assert cancelled.status == "cancelled" and cancelled.messages[-1][0] == "execution_interrupted"
    assert to_history_entry(cancelled)["status"]["status_str"] == "error"
    assert to_job(cancelled)["status"] == "cancelled"
    assert store.pending() == []


def test_requeue_running_and_interrupted(store: PromptStore) -> None:
    a, b = add(store), add(store)
    store.claim("w")
    again = store.requeue(a.prompt_id, "device lost")
    assert again.status == "pending" and again.retries == 1 and again.worker_id is None
    assert again.messages[-1][0] == "execution_requeued" and again.messages[-1][1]["reason"] == "device lost"
    assert [i.prompt_id for i in store.pending()] == [a.prompt_id, b.prompt_id]  # keeps its place
    with pytest.raises(PromptStateError, match="is pending"):
        store.requeue(a.prompt_id, "again")
    store.claim("w")
    store.finish(a.prompt_id, "interrupted", {}, [["execution_interrupted", {}]])
    back = store.requeue_interrupted(a.prompt_id)
    assert back.status == "pending" and back.retries == 2 and store.history_item(a.prompt_id) is None
    store.claim("w")
    done = store.finish(a.prompt_id, "success", {"9": IMAGE_UI}, [["execution_success", {}]])
    # the retry notes stay in front of the last run's messages
    assert [m[0] for m in done.messages] == ["execution_requeued", "execution_interrupted",
                                             "execution_requeued", "execution_success"]
    assert to_job(done)["retries"] == 2 and to_job(done)["worker_id"] == "w"


# --- crash recovery ------------------------------------------------------------------------------

def test_recover_requeues_once_then_leaves_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    s = PromptStore(path)
    a, b = add(s), add(s)
    s.claim("w0")
    s.close()                                   # "crash": a is left running
    s = PromptStore(path)
    recovered = s.recover_after_crash()
    assert [(i.prompt_id, i.status, i.retries) for i in recovered] == [(a.prompt_id, "pending", 1)]
    assert [i.prompt_id for i in s.pending()] == [a.prompt_id, b.prompt_id]
    s.claim("w0")
    s.close()                                   # crashes again on the same prompt
    s = PromptStore(path)
    [item] = s.recover_after_crash()
    assert item.status == "interrupted" and item.messages[-1][0] == "execution_interrupted"
    assert "already retried" in item.messages[-1][1]["reason"]
    assert to_job(item)["status"] == "cancelled"
    assert [i.prompt_id for i in s.pending()] == [b.prompt_id]
    assert s.requeue_interrupted(a.prompt_id).status == "pending"
    s.claim("w0")
    assert [i.status for i in s.recover_after_crash(requeue=False)] == ["interrupted"]
    s.close()


def test_recover_only_named_workers(store: PromptStore) -> None:
    add(store), add(store)
    store.claim("gpu0")
    store.claim("gpu1")
    [item] = store.recover_after_crash(workers=["gpu1"])
    assert item.status == "pending"
    assert [i.worker_id for i in store.running()] == ["gpu0"]


# --- /api/jobs -----------------------------------------------------------------------------------

def test_jobs_render_filter_sort_and_page(store: PromptStore) -> None:
    wf = {"extra_pnginfo": {"workflow": {"id": "wf-A"}}}
    fast = add(store, extra_data=wf)
    slow = add(store)
    failed = add(store)
    running = add(store)
    waiting = add(store, extra_data=wf)
    store.claim("w")
    store.finish(fast.prompt_id, "success", {"9": IMAGE_UI}, [])
    store.claim("w")
    time.sleep(0.05)
    store.finish(slow.prompt_id, "success", {"9": IMAGE_UI}, [])
    store.claim("w")
    err = {"node_id": "3", "exception_message": "boom"}
    store.finish(failed.prompt_id, "error", {}, [["execution_error", err]])
    store.claim("w")

    jobs, total = store.jobs()
    assert total == 5
    assert [j["id"] for j in jobs] == [waiting.prompt_id, running.prompt_id, failed.prompt_id,
                                       slow.prompt_id, fast.prompt_id]  # newest created first
    by_id = {j["id"]: j for j in jobs}
    assert by_id[waiting.prompt_id] == {"id": waiting.prompt_id, "status": "pending", "priority": waiting.number,
                                        "create_time": waiting.extra_data["create_time"], "outputs_count": 0,
                                        "previewable_outputs_count": 0, "workflow_id": "wf-A"}
    assert by_id[running.prompt_id]["status"] == "in_progress"
    assert "execution_start_time" in by_id[running.prompt_id]
    assert by_id[failed.prompt_id]["status"] == "failed" and by_id[failed.prompt_id]["execution_error"] == err
    done = by_id[slow.prompt_id]
    assert done["status"] == "completed" and done["outputs_count"] == 1
    assert done["preview_output"] == {**IMAGE_UI["images"][0], "nodeId": "9", "mediaType": "images"}
    assert done["execution_end_time"] - done["execution_start_time"] >= 40
    assert done["worker_id"] == by_id[running.prompt_id]["worker_id"] == "w" and "retries" not in done
    assert all(v is not None for j in jobs for v in j.values())

    def ids(**kw):
        return [j["id"] for j in store.jobs(**kw)[0]]

    assert ids(status=["completed"], sort_by="execution_duration") == [slow.prompt_id, fast.prompt_id]
    assert ids(status=["completed"], sort_by="execution_duration", sort_order="asc") == [fast.prompt_id,
                                                                                         slow.prompt_id]
    assert ids(status=["pending", "in_progress"], sort_order="asc") == [running.prompt_id, waiting.prompt_id]
    assert ids(workflow_id="wf-A") == [waiting.prompt_id, fast.prompt_id]
    assert store.jobs(limit=2, offset=1) == (store.jobs()[0][1:3], 5)
    assert store.jobs(status=["failed"], limit=0) == ([], 1)
    assert store.jobs(offset=10) == ([], 5)
    store.cancel(waiting.prompt_id)
    assert ids(status=["cancelled"]) == [waiting.prompt_id]
    for bad in ({"status": ["done"]}, {"sort_by": "name"}, {"sort_order": "up"}, {"offset": -1}):
        with pytest.raises(ValueError):
            store.jobs(**bad)
    detail = to_job(store.get(slow.prompt_id), include_outputs=True)
    assert detail["outputs"] == {"9": IMAGE_UI} and detail["workflow"]["prompt"] == PROMPT
    assert detail["execution_status"]["status_str"] == "success"


def test_output_summary_counts_and_preview_priority() -> None:
    outputs = {
        "5": {"text": ["a caption"]},
        "6": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}], "animated": [False]},
        "7": {"latents": [{"filename": "x.latent", "subfolder": "", "type": "output"}]},
        "8": {"images": [{"filename": "s.png", "subfolder": "", "type": "output"}]},
    }
    count, previewable, preview = summarize_outputs(outputs)
    assert (count, previewable) == (3, 2)
    assert preview["filename"] == "s.png" and preview["nodeId"] == "8"
    assert summarize_outputs({"5": {"text": ["t" * 5000]}})[2] == {
        "content": "t" * 1024, "nodeId": "5", "mediaType": "text", "truncated": True}
    assert summarize_outputs({})[2] is None


# --- kill -9 -------------------------------------------------------------------------------------

def writer(path: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(path), *args], stdout=log.open("w"),
                            stderr=subprocess.PIPE)


def acked(log: Path) -> list[tuple[str, str]]:
    """Complete lines only: a line cut by the kill was not acknowledged."""
    text = log.read_text()
    lines = text.split("\n")[:-1]
    return [tuple(line.split()) for line in lines if line and line != "ready"]


def wait_for_line(log: Path, line: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text().split("\n"):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, f"writer never printed {line!r}"
        time.sleep(0.01)


def test_kill_9_after_add_loses_nothing_and_recovers_the_claimed(tmp_path: Path) -> None:
    path, log = tmp_path / "q.db", tmp_path / "acks.txt"
    proc = writer(path, log, "claim", "6")
    wait_for_line(log, "ready", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    lines = acked(log)
    added = [pid for kind, pid in lines if kind == "added"]
    [claimed] = [pid for kind, pid in lines if kind == "claimed"]
    assert len(added) == 6 and claimed == added[0]
    with PromptStore(path) as s:
        assert s.integrity_check() == ["ok"]
        assert [i.prompt_id for i in s.running()] == [claimed]
        [item] = s.recover_after_crash()
        assert (item.prompt_id, item.status, item.retries) == (claimed, "pending", 1)
        assert [i.prompt_id for i in s.pending()] == added

    # the re-queued prompt is claimed and the process killed again: now it waits for the user
    proc = writer(path, log, "claim", "0")
    wait_for_line(log, "ready", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert acked(log) == [("claimed", claimed)]
    with PromptStore(path) as s:
        [item] = s.recover_after_crash()
        assert (item.prompt_id, item.status) == (claimed, "interrupted")
        assert [i.prompt_id for i in s.pending()] == added[1:]
        assert s.requeue_interrupted(claimed).status == "pending"


def test_kill_9_at_random_moments_never_corrupts_or_loses(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    rng = random.Random(1234)
    every_ack: set[str] = set()
    for run in range(6):
        log = tmp_path / f"acks{run}.txt"
        proc = writer(path, log, "churn")
        wait_for_line_count(log, proc, 3)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        every_ack |= {pid for kind, pid in acked(log) if kind == "added"}
        with raw(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = {r[0] for r in conn.execute("SELECT prompt_id FROM prompts")}
        assert every_ack <= stored, f"run {run}: acknowledged prompts lost: {sorted(every_ack - stored)[:5]}"
    assert len(every_ack) > 30
    with PromptStore(path) as s:
        s.recover_after_crash()
        assert s.running() == []
        item = s.claim("after")
        assert item is not None and s.finish(item.prompt_id, "success", {}, []).status == "success"


def wait_for_line_count(log: Path, proc: subprocess.Popen, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count("\n") < count:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "writer never started writing"
        time.sleep(0.005)
