"""Fuzzing the server over HTTP: hostile prompts, workflows and bodies get a clear 400, never a 500 or a hang.

Against a real `python server.py` process: every answer is strict JSON (what a browser's JSON.parse
takes), refusals carry `error` and `node_errors`, accepted prompts run to their end, and afterwards
the queue, history and job list still read as strict JSON, so one hostile client cannot break the
editor of everyone else.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hardening.hardening_harness import HardServer, strict_json
from tests.hardening.strategies import HOSTILE_TEXT, api_prompts, deep, json_values, scalars, ui_workflows
from tests.hardening.prompt_checks import chain, cycle, fuzz_settings
from tests.server.server_harness import http, wait_until

REQUEST_TIMEOUT = 30.0  # an answer slower than this counts as a hang


@pytest.fixture(scope="module")
def info(target: HardServer) -> dict[str, Any]:
    """The hardening nodes' schemas as the server publishes them (the quick, pure nodes only)."""
    return {k: v for k, v in target.get("/object_info").json().items() if k.startswith("Hard")}


def send(server: HardServer, path: str, body: Any = None, *, data: bytes | None = None,
         statuses: tuple[int, ...] = (200, 400)) -> tuple[int, Any]:
    """POST and check the answer is one of `statuses` with a strict-JSON body (or empty for a bare 200)."""
    if data is None:
        data = json.dumps(body).encode()  # Python writes NaN and Infinity; the server must refuse them
    reply = http("POST", server.url + path, data=data, headers={"Content-Type": "application/json"},
                 timeout=REQUEST_TIMEOUT)
    assert reply.status in statuses, (path, reply.status, reply.body[:300])
    parsed = strict_json(reply.body) if reply.body else None
    if reply.status == 400:
        assert isinstance(parsed, dict) and parsed["error"]["type"] and parsed["error"]["message"], parsed
    return reply.status, parsed


def extras() -> st.SearchStrategy[dict[str, Any]]:
    """The other fields of a POST /prompt body, from sensible to hostile."""
    return st.fixed_dictionaries({}, optional={
        "client_id": st.one_of(st.text(max_size=10), scalars()),
        "extra_data": st.one_of(st.dictionaries(st.text(max_size=6), json_values(4), max_size=3), scalars()),
        "number": scalars(), "front": scalars(),
        "prompt_id": st.one_of(st.uuids().map(str), st.sampled_from(HOSTILE_TEXT), scalars()),
        "partial_execution_targets": st.one_of(st.lists(st.sampled_from(["1", "2", "out", "x", ""]), max_size=3),
                                               json_values(3)),
    })


def queue_state_is_strict_json(server: HardServer) -> None:
    """What every editor reads after the fuzzing: all of it parses as JSON.parse would."""
    wait_until(lambda: server.get("/prompt").json()["exec_info"]["queue_remaining"] == 0, timeout=120,
               what="the accepted prompts finished")
    for path in ("/queue", "/history", "/api/jobs?limit=500", "/prompt"):
        reply = server.get(path)
        assert reply.status == 200, (path, reply.status)
        strict_json(reply.body)
    assert not server.errors_logged(), server.errors_logged()[:5]


def test_post_prompt_with_hostile_api_prompts(target: HardServer, info: dict[str, Any], heavy: bool,
                                              figures: Any) -> None:
    seen = {"cases": 0, "accepted": 0, "refused": 0}

    @fuzz_settings(heavy, 120, 3000)
    @given(st.one_of(api_prompts(info, json_clean=True), api_prompts(info)), extras())
    def check(prompt: dict[str, Any], fields: dict[str, Any]) -> None:
        seen["cases"] += 1
        status, body = send(target, "/prompt", {"prompt": prompt, **fields}, statuses=(200, 400, 409))
        if status == 200:
            seen["accepted"] += 1
            assert body["prompt_id"] and isinstance(body["node_errors"], dict)
        else:
            seen["refused"] += 1

    check()
    queue_state_is_strict_json(target)
    finished = [job["status"] for job in target.get("/api/jobs?limit=100000").json()["jobs"]]
    figures.record(**seen, finished_ok=finished.count("completed"), finished_failed=finished.count("failed"))
    assert seen["accepted"] > 0 and seen["refused"] > 0


def test_post_prompt_and_convert_with_hostile_ui_workflows(target: HardServer, info: dict[str, Any], heavy: bool,
                                                           figures: Any) -> None:
    seen = {"cases": 0, "accepted": 0, "refused": 0, "converted": 0}

    @fuzz_settings(heavy, 60, 1500)
    @given(ui_workflows(info))
    def check(workflow: dict[str, Any]) -> None:
        seen["cases"] += 1
        status, _ = send(target, "/prompt", {"prompt": workflow})
        seen["accepted" if status == 200 else "refused"] += 1
        status, body = send(target, "/workflow/convert", workflow)
        if status == 200:
            seen["converted"] += 1
            assert isinstance(body["prompt"], dict)

    check()
    queue_state_is_strict_json(target)
    figures.record(**seen)


def hostile_bodies(size: int) -> dict[str, bytes]:
    """name -> raw body of POST /prompt."""
    good = {"1": {"class_type": "HardValues", "inputs": {"count": 2, "scale": 1.0, "text": "t", "flag": False,
                                                         "mode": "plain"}},
            "2": {"class_type": "HardSink", "inputs": {"source": ["1", 0], "label": "ok"}}}

    def with_value(value_json: str) -> bytes:
        return ('{"prompt": {"1": {"class_type": "HardValues", "inputs": {"count": 2, "scale": ' + value_json +
                ', "text": "t", "flag": false, "mode": "plain"}}, "2": {"class_type": "HardSink", '
                '"inputs": {"source": ["1", 0], "label": "ok"}}}}').encode()

    return {
        "deep_body": b"[" * 100_000 + b"]" * 100_000,
        "deep_object_body": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "deep_in_prompt": json.dumps({"prompt": {**good, "1": {**good["1"], "inputs": {**good["1"]["inputs"],
                                                                                       "junk": deep(500)}}}}).encode(),
        "nested_90_levels": json.dumps({"prompt": {**good, "1": {**good["1"], "inputs": {**good["1"]["inputs"],
                                                                                         "junk": deep(90)}}}}).encode(),
        "nan": with_value("NaN"), "infinity": with_value("Infinity"), "minus_infinity": with_value("-Infinity"),
        "overflowing_float": with_value("1e400"), "many_digits": with_value("9" * 5000),
        "nan_in_undeclared_input": json.dumps({"prompt": {**good, "2": {**good["2"], "inputs": {
            **good["2"]["inputs"], "junk": float("nan")}}}}).encode(),
        "infinity_in_extra_data": json.dumps({"prompt": good, "extra_data": {"x": [float("inf")]}}).encode(),
        "lone_surrogate_value": json.dumps({"prompt": good, "extra_data": {"note": "\ud800"}}).encode(),
        "lone_surrogate_key": ('{"prompt": ' + json.dumps(good) + ', "extra_data": {"\\udfff": 1}}').encode(),
        "lone_surrogate_id": ('{"prompt": {"\\ud800": ' + json.dumps(good["1"]) + ', "2": {"class_type": "HardSink", '
                              '"inputs": {"source": ["\\ud800", 0], "label": "x"}}}}').encode(),
        "bad_utf8": b'{"prompt": {"1": {"class_type": "\xff\xfe"}}}',
        "utf16": json.dumps({"prompt": good}).encode("utf-16"),
        "nul_bytes": b'{"prompt": \x00}',
        "truncated": json.dumps({"prompt": good}).encode()[:-7],
        "empty": b"", "null": b"null", "array": b"[1, 2]", "string": b'"prompt"', "number": b"12",
        "prompt_is_list": b'{"prompt": [1, 2]}', "prompt_is_string": b'{"prompt": "x"}',
        "cycle": json.dumps({"prompt": cycle(size)}).encode(),
        "chain": json.dumps({"prompt": chain(size)}).encode(),
        "self_link": json.dumps({"prompt": {**good, "1": {"class_type": "HardCombine",
                                                          "inputs": {"a": ["1", 0]}}}}).encode(),
    }


def test_hostile_bodies_get_a_clean_refusal(target: HardServer, heavy: bool, figures: Any) -> None:
    size = 20_000 if heavy else 2_000
    answers = {}
    for name, raw in hostile_bodies(size).items():
        status, _ = send(target, "/prompt", data=raw)
        answers[name] = status
    accepted = {"chain", "utf16", "nested_90_levels"}  # json.loads detects UTF-16, as it should
    assert {k for k, v in answers.items() if v == 200} == accepted, answers
    assert {k for k, v in answers.items() if v == 400} == set(answers) - accepted, answers
    # Bigger than the server's limit (2 MB here): refused before it is read.
    too_big = http("POST", target.url + "/prompt", data=b'{"prompt": "' + b"x" * (3 << 20) + b'"}',
                   headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT)
    assert too_big.status == 413
    answers["oversized_3MB"] = too_big.status
    queue_state_is_strict_json(target)
    figures.record(cases=len(answers), graph_nodes=size, answers=answers)


ROUTES = ["/queue", "/history", "/interrupt", "/free", "/api/jobs/cancel", "/settings", "/settings/x.y",
          "/workflow/convert", "/api/prompt"]


def test_other_json_routes_refuse_hostile_bodies(target: HardServer, heavy: bool, figures: Any) -> None:
    statuses: dict[int, int] = {}

    @fuzz_settings(heavy, 150, 3000)
    @given(st.sampled_from(ROUTES), json_values(10))
    def check(path: str, body: Any) -> None:
        if path in ("/queue", "/history") and isinstance(body, dict) and body.get("clear"):
            body = {**body, "clear": False}  # keep what the other tests queued
        status, _ = send(target, path, body, statuses=(200, 400, 404, 409))
        statuses[status] = statuses.get(status, 0) + 1

    check()
    for raw in (b"[" * 100_000, b'{"delete": NaN}', b'{"\\ud800": 1}'):
        for path in ROUTES:
            send(target, path, data=raw, statuses=(400,))
            statuses[400] = statuses.get(400, 0) + 1
    queue_state_is_strict_json(target)
    figures.record(cases=sum(statuses.values()), statuses={str(k): v for k, v in sorted(statuses.items())})
