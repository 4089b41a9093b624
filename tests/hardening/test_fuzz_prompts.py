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
from hypothesis import given
from hypothesis import strategies as st

from graph.executor import Executor
from graph.registry import NodeRegistry
from tests.hardening import hardening_nodes
from tests.hardening.prompt_checks import big_graphs, check_verdict, fuzz_settings
from tests.hardening.strategies import api_prompts, json_values


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    made = NodeRegistry()
    made.add_module(hardening_nodes)
    return made


def test_hostile_prompts_get_a_verdict_and_accepted_ones_run(registry: NodeRegistry, heavy: bool,
                                                              figures: Any) -> None:
    info = registry.object_info()
    executor = Executor(registry)
    seen = {"cases": 0, "accepted": 0, "refused": 0, "ran_ok": 0, "ran_out_of_memory": 0}
    slowest = [0.0]

    @fuzz_settings(heavy, 120, 6000)
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

    @fuzz_settings(heavy, 100, 5000)
    @given(st.one_of(json_values(20), st.dictionaries(st.text(max_size=4), json_values(8), max_size=6)))
    def check(data: Any) -> None:
        count[0] += 1
        outcome = check_verdict(data, registry)
        assert not outcome.ok or isinstance(data, dict)

    check()
    figures.record(cases=count[0])


def test_thousands_of_nodes_chains_fans_and_cycles(registry: NodeRegistry, heavy: bool, figures: Any) -> None:
    size = 20_000 if heavy else 2_000
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
