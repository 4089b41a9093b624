"""Fuzzing the UI-to-API converter: every hostile editor workflow converts or is refused with its problems.

Properties, for every drawn workflow: `convert_ui_to_api` returns an API prompt or raises
`WorkflowConversionError` (nothing else, and never its catch-all "internal error"); a converted
prompt has the API shape and goes through validation without an exception.
"""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graph.registry import NodeRegistry
from graph.ui_workflow import INTERNAL_ERROR_PREFIX, WorkflowConversionError, convert_ui_to_api, to_api
from graph.validation import validate_prompt
from tests.hardening import hardening_nodes
from tests.hardening.strategies import deep, json_values, ui_workflows
from tests.hardening.prompt_checks import HANG_SECONDS, check_verdict, fuzz_settings
from tests.server import server_nodes
from tests.server.server_harness import ui_workflow


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    made = NodeRegistry()
    made.add_module(hardening_nodes)
    made.add_module(server_nodes)
    return made


def convert(workflow: Any, info: dict[str, Any]) -> dict[str, Any] | None:
    """The converted prompt, or None when refused; fails the test on anything but a clean refusal."""
    started = time.perf_counter()
    try:
        prompt = convert_ui_to_api(workflow, info)
    except WorkflowConversionError as exc:
        assert exc.problems, "a refusal names its problems"
        internal = [str(p) for p in exc.problems if INTERNAL_ERROR_PREFIX in p.message]
        assert not internal, internal  # the converter met a shape it did not foresee
        json.dumps([str(p) for p in exc.problems])
        return None
    finally:
        assert time.perf_counter() - started < HANG_SECONDS
    assert isinstance(prompt, dict)
    for key, node in prompt.items():
        assert isinstance(key, str) and isinstance(node, dict)
        assert isinstance(node["class_type"], str) and isinstance(node["inputs"], dict)
    return prompt


def test_hostile_ui_workflows_convert_or_are_refused(registry: NodeRegistry, heavy: bool, figures: Any) -> None:
    info = registry.object_info()
    seen = {"cases": 0, "converted": 0, "refused": 0, "converted_and_valid": 0}

    @fuzz_settings(heavy, 120, 6000)
    @given(ui_workflows(info))
    def check(workflow: dict[str, Any]) -> None:
        seen["cases"] += 1
        prompt = convert(workflow, info)
        if prompt is None:
            seen["refused"] += 1
            return
        seen["converted"] += 1
        if prompt and check_verdict(prompt, registry).ok:
            seen["converted_and_valid"] += 1

    check()
    figures.record(**seen)
    assert seen["converted"] > 0 and seen["refused"] > 0


def test_a_real_workflow_mutated_converts_or_is_refused(registry: NodeRegistry, heavy: bool, figures: Any) -> None:
    info = registry.object_info()
    base = ui_workflow()
    count = [0]
    paths = [("nodes",), ("links",)] + [("nodes", i, key) for i in range(len(base["nodes"]))
                                        for key in ("id", "type", "mode", "inputs", "outputs", "widgets_values")] + \
        [("links", i, j) for i in range(len(base["links"])) for j in range(6)]

    @fuzz_settings(heavy, 120, 5000)
    @given(st.lists(st.tuples(st.sampled_from(paths), json_values(6)), min_size=1, max_size=4))
    def check(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
        count[0] += 1
        workflow = json.loads(json.dumps(base))
        for path, value in changes:
            holder = workflow
            for key in path[:-1]:
                holder = holder[key] if isinstance(holder, (dict, list)) and _has(holder, key) else None
            if holder is not None and _has(holder, path[-1]):
                holder[path[-1]] = value
        prompt = convert(workflow, info)
        if prompt:
            check_verdict(prompt, registry)

    check()
    figures.record(cases=count[0])


def _has(holder: Any, key: Any) -> bool:
    return (isinstance(holder, dict) and key in holder) or (isinstance(holder, list) and isinstance(key, int)
                                                             and 0 <= key < len(holder))


def test_huge_and_deep_workflows(registry: NodeRegistry, heavy: bool, figures: Any) -> None:
    info = registry.object_info()
    size = 20_000 if heavy else 2_000
    nodes = [{"id": i + 1, "type": "TestImage" if i == 0 else "Reroute", "mode": 0,
              "inputs": [] if i == 0 else [{"name": "", "type": "*", "link": i}],
              "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [i + 1]}], "widgets_values": [8, 8, 0.5]}
             for i in range(size)]
    nodes.append({"id": size + 1, "type": "TestShow", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE",
                                                                             "link": size}], "outputs": []})
    links = [[i, i, 0, i + 1, 0, "IMAGE"] for i in range(1, size + 1)]
    reroutes = {"nodes": nodes, "links": links}
    looped = json.loads(json.dumps(reroutes))
    looped["links"][0] = [1, size, 0, 2, 0, "IMAGE"]  # the reroutes feed each other in a ring
    nested = {"nodes": [{"id": 1, "type": "sg", "mode": 0}],
              "definitions": {"subgraphs": [{"id": "sg", "nodes": [{"id": 1, "type": "sg", "mode": 0}], "links": []}]}}
    deep_widgets = {"nodes": [{"id": 1, "type": "TestShow", "widgets_values": deep(400)}]}
    times = {}
    results = {}
    for name, workflow in {"reroute_chain": reroutes, "reroute_ring": looped, "self_nesting_subgraph": nested,
                           "deep_widget_values": deep_widgets, "deep_junk": deep(600),
                           "not_a_workflow": [1, 2, 3]}.items():
        started = time.perf_counter()
        try:
            prompt = to_api(workflow, info)
        except WorkflowConversionError as exc:
            assert not [p for p in exc.problems if INTERNAL_ERROR_PREFIX in p.message], (name, exc)
            results[name] = "refused"
        else:
            outcome = validate_prompt(prompt, registry)
            results[name] = "valid" if outcome.ok else "converted, invalid"
        times[name] = round(time.perf_counter() - started, 2)
    assert results["reroute_chain"] == "valid"
    assert results["reroute_ring"] != "valid" and results["self_nesting_subgraph"] == "refused"
    figures.record(nodes=size, results=results, seconds=times)
