"""Fuzzing validation and execution in-process: every hostile API prompt gets a verdict, never an exception.

Properties, for every drawn prompt: `validate_prompt` returns (it never raises or hangs); a refusal
has a known top-level type and per-node errors of known types that name their node; the answer
is JSON; an accepted prompt runs to `success` (or fails only in the node built to run out of
memory) and never takes the executor down. Deterministic graphs test the sizes: thousands of
nodes in chains, fans and cycles.
"""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.executor import Executor
from graph.registry import NodeRegistry
from graph.validation import MESSAGES, validate_prompt
from tests.hardening import hardening_nodes
from tests.hardening.strategies import api_prompts, deep, json_values

TOP_LEVEL_ERRORS = {"no_prompt", "invalid_prompt", "prompt_no_outputs", "prompt_outputs_failed_validation"}
NODE_ERRORS = set(MESSAGES)
HANG_SECONDS = 30.0


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    made = NodeRegistry()
    made.add_module(hardening_nodes)
    return made


def fuzz_settings(heavy: bool, default: int, many: int) -> settings:
    """Quick and reproducible by default; many random cases with --heavy."""
    return settings(max_examples=many if heavy else default, deadline=None, database=None,
                    derandomize=not heavy, suppress_health_check=list(HealthCheck))


def check_verdict(prompt: Any, registry: NodeRegistry) -> Any:
    started = time.perf_counter()
    outcome = validate_prompt(prompt, registry)
    assert time.perf_counter() - started < HANG_SECONDS
    body = json.dumps(outcome.response())  # what the server sends with a 400
    assert body
    if outcome.ok:
        assert outcome.outputs and all(out in outcome.nodes for out in outcome.outputs)
        assert outcome.error is None
    else:
        assert outcome.error is not None and outcome.error["type"] in TOP_LEVEL_ERRORS, outcome.error
        assert outcome.error["message"]
    for node_id, errors in outcome.node_errors.items():
        assert errors, node_id
        for error in errors:
            assert error.type in NODE_ERRORS, error
            assert node_id in error.details, (node_id, error.details)  # every error names its node
    return outcome


def test_hostile_prompts_get_a_verdict_and_accepted_ones_run(registry: NodeRegistry, heavy: bool,
                                                              figures: Any) -> None:
    info = registry.object_info()
    executor = Executor(registry)
    seen = {"cases": 0, "accepted": 0, "refused": 0, "ran_ok": 0, "ran_out_of_memory": 0}
    slowest = [0.0]

    @fuzz_settings(heavy, 200, 6000)
    @given(api_prompts(info))
    def check(prompt: dict[str, Any]) -> None:
        seen["cases"] += 1
        started = time.perf_counter()
        outcome = check_verdict(prompt, registry)
        if not outcome.ok:
            seen["refused"] += 1
            return
        seen["accepted"] += 1
        result = executor.execute(prompt, f"fuzz-{seen['cases']}", validated=outcome)
        slowest[0] = max(slowest[0], time.perf_counter() - started)
        if result.status == "error":
            assert result.error is not None and result.error["node_type"] == "HardMemory", result.error
            assert "ran out of memory" in result.error["exception_message"]
            seen["ran_out_of_memory"] += 1
        else:
            assert result.status == "success", result.error
            seen["ran_ok"] += 1

    check()
    figures.record(**seen, slowest_case_seconds=round(slowest[0], 3))
    assert seen["accepted"] > 0 and seen["refused"] > 0  # the strategy reaches both sides


def test_arbitrary_json_is_refused_cleanly(registry: NodeRegistry, heavy: bool, figures: Any) -> None:
    count = [0]

    @fuzz_settings(heavy, 150, 5000)
    @given(st.one_of(json_values(20), st.dictionaries(st.text(max_size=4), json_values(8), max_size=6)))
    def check(data: Any) -> None:
        count[0] += 1
        outcome = check_verdict(data, registry)
        assert not outcome.ok or isinstance(data, dict)

    check()
    figures.record(cases=count[0])


def chain(length: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "HardValues", "inputs": {"count": 1, "scale": 1.0, "text": "a",
                                                                            "flag": True, "mode": "plain"}}}
    for i in range(1, length):
        prompt[str(i)] = {"class_type": "HardCombine", "inputs": {"a": [str(i - 1), 0]}}
    prompt["sink"] = {"class_type": "HardSink", "inputs": {"source": [str(length - 1), 0], "label": "end"}}
    return prompt


def fan(width: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "HardValues", "inputs": {"count": 1, "scale": 1.0, "text": "a",
                                                                            "flag": True, "mode": "plain"}}}
    for i in range(1, width):
        prompt[str(i)] = {"class_type": "HardSink", "inputs": {"source": ["0", 0], "label": str(i)}}
    return prompt


def cycle(length: int) -> dict[str, Any]:
    prompt = chain(length)
    prompt["0"] = {"class_type": "HardCombine", "inputs": {"a": [str(length - 1), 0]}}
    return prompt


def outputs_on_chain(size: int) -> dict[str, Any]:
    """`size` output nodes all fed by the end of a chain of `size` nodes."""
    prompt = chain(size)
    del prompt["sink"]
    for i in range(size):
        prompt[f"s{i}"] = {"class_type": "HardSink", "inputs": {"source": [str(size - 1), 0], "label": "x"}}
    return prompt


def big_graphs(size: int) -> dict[str, tuple[dict[str, Any], bool]]:
    """name -> (prompt, should it be accepted)."""
    spoiled = outputs_on_chain(size)
    spoiled["0"]["inputs"]["count"] = -1
    self_linked = chain(size)
    self_linked["7"]["inputs"]["a"] = ["7", 0]
    dangling = chain(size)
    dangling[str(size // 2)]["inputs"]["a"] = ["nowhere", 0]
    return {"chain": (chain(size), True), "fan": (fan(size), True), "cycle": (cycle(size), False),
            "outputs_on_chain": (outputs_on_chain(size), True), "outputs_on_spoiled_chain": (spoiled, False),
            "self_link": (self_linked, False), "dangling": (dangling, False),
            "deep_value": ({**chain(3), "1": {"class_type": "HardCombine", "inputs": {"a": ["0", 0], "x": deep(400)}}},
                           True),
            "deep_literal": ({"0": {"class_type": "HardValues",
                                    "inputs": {"count": deep(400), "scale": 1.0, "text": "a", "flag": True,
                                               "mode": "plain"}},
                              "s": {"class_type": "HardSink", "inputs": {"source": ["0", 0]}}}, False)}


def test_thousands_of_nodes_chains_fans_and_cycles(registry: NodeRegistry, heavy: bool, figures: Any) -> None:
    size = 20_000 if heavy else 3_000
    executor = Executor(registry)
    times = {}
    for name, (prompt, accepted) in big_graphs(size).items():
        started = time.perf_counter()
        outcome = check_verdict(prompt, registry)
        assert outcome.ok == accepted, (name, outcome.messages()[:3])
        # The answer grows with the prompt, not with its square (a 3000-node cycle once made 100 MB).
        assert len(json.dumps(outcome.response())) < 1000 * len(prompt) + 3 * len(json.dumps(prompt)), name
        if accepted:
            result = executor.execute(prompt, name, validated=outcome)
            assert result.status == "success", (name, result.error)
        times[name] = round(time.perf_counter() - started, 2)
        if name == "cycle":
            assert len(outcome.node_errors) == size  # every member of the cycle is named
            assert all(e[0].type == "dependency_cycle" for e in outcome.node_errors.values())
    figures.record(nodes=size, seconds=times)
