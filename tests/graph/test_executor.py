"""The executor: order, cache reuse, lazy inputs, lists, expansion, async, blockers, interrupts, failures."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from graph.cache import OutputCache
from graph.context import Interrupt
from graph.executor import Executor

from . import sample_nodes
from .sample_nodes import CALLS


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    CALLS.clear()


@pytest.fixture
def executor() -> Executor:
    return Executor(sample_nodes.registry())


def sum_graph(a: int = 2, b: int = 3) -> dict[str, Any]:
    return {
        "1": {"class_type": "Number", "inputs": {"value": a}},
        "2": {"class_type": "Number", "inputs": {"value": b}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def names(self) -> list[str]:
        return [e for e, _ in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [d for e, d in self.events if e == name]


def test_runs_in_dependency_order_and_reports_events(executor: Executor) -> None:
    rec = Recorder()
    result = executor.execute(sum_graph(), "p1", emit=rec)
    assert result.status == "success"
    assert result.outputs == {"4": {"text": ["5"], "node": ["4"]}}
    order = [d["node"] for d in rec.of("executing")]
    assert order.index("3") > order.index("1") and order.index("3") > order.index("2")
    assert order[-1] == "4"
    assert rec.names()[0] == "execution_start" and rec.names()[1] == "execution_cached"
    assert rec.names()[-1] == "execution_success"
    assert rec.of("executed") == [{"node": "4", "display_node": "4", "output": {"text": ["5"], "node": ["4"]},
                                   "prompt_id": "p1"}]


def test_unchanged_rerun_executes_nothing_and_replays_outputs(executor: Executor) -> None:
    executor.execute(sum_graph(), "p1")
    CALLS.clear()
    rec = Recorder()
    result = executor.execute(sum_graph(), "p2", emit=rec)
    assert result.executed == [] and CALLS == {}
    assert sorted(rec.of("execution_cached")[0]["nodes"]) == ["1", "2", "3", "4"]  # all cached, as ComfyUI lists them
    assert result.outputs == {"4": {"text": ["5"], "node": ["4"]}}
    assert rec.of("executed")[0]["output"] == {"text": ["5"], "node": ["4"]}


def test_literal_change_reruns_only_that_node_and_its_dependents(executor: Executor) -> None:
    executor.execute(sum_graph(2, 3), "p1")
    result = executor.execute(sum_graph(2, 7), "p2")
    assert sorted(result.executed) == ["2", "3", "4"]
    assert "1" in result.cached
    assert result.outputs["4"]["text"] == ["9"]


def test_identical_subgraphs_share_results_across_prompts_and_ids(executor: Executor) -> None:
    executor.execute(sum_graph(), "p1")
    renamed = {"a": {"class_type": "Number", "inputs": {"value": 2}},
               "b": {"class_type": "Number", "inputs": {"value": 3}},
               "c": {"class_type": "Add", "inputs": {"a": ["a", 0], "b": ["b", 0]}},
               "d": {"class_type": "Describe", "inputs": {"value": ["c", 0], "mode": "short", "prefix": "n=",
                                                           "loud": False}},
               "e": {"class_type": "Show", "inputs": {"value": ["d", 0]}}}
    CALLS.clear()
    result = executor.execute(renamed, "p2")
    assert result.outputs["e"]["text"] == ["n=5"]
    assert "Add" not in CALLS and "Number" not in CALLS
    assert sorted(result.executed) == ["d", "e"]


def test_only_outputs_and_what_they_need_run(executor: Executor) -> None:
    graph = sum_graph()
    graph["9"] = {"class_type": "Number", "inputs": {"value": 1}}  # feeds nothing
    result = executor.execute(graph, "p1")
    assert "9" not in result.executed


def test_partial_execution_targets(executor: Executor) -> None:
    graph = sum_graph()
    graph["5"] = {"class_type": "Show", "inputs": {"value": ["1", 0]}}
    result = executor.execute(graph, "p1", targets=["5"])
    assert sorted(result.executed) == ["1", "5"]


def test_lazy_input_not_needed_is_never_evaluated(executor: Executor) -> None:
    graph = {
        "1": {"class_type": "Number", "inputs": {"value": 4}},
        "2": {"class_type": "Boom", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Switch", "inputs": {"use_second": False, "first": ["1", 0], "second": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result = executor.execute(graph, "p1")
    assert result.status == "success", result.error
    assert result.outputs["4"]["text"] == ["4"]
    assert "Boom" not in CALLS


def test_lazy_input_requested_is_evaluated(executor: Executor) -> None:
    graph = {
        "1": {"class_type": "Number", "inputs": {"value": 4}},
        "2": {"class_type": "Number", "inputs": {"value": 9}},
        "3": {"class_type": "Switch", "inputs": {"use_second": True, "first": ["1", 0], "second": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    result = executor.execute(graph, "p1")
    assert result.outputs["4"]["text"] == ["9"]
    assert "1" not in result.executed


def test_list_outputs_map_downstream_nodes_per_item(executor: Executor) -> None:
    graph = {
        "1": {"class_type": "Range", "inputs": {"n": 3}},
        "2": {"class_type": "Number", "inputs": {"value": 10}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Sum", "inputs": {"values": ["3", 0]}},
        "6": {"class_type": "Show", "inputs": {"value": ["5", 0]}},
    }
    result = executor.execute(graph, "p1")
    assert result.outputs["4"]["text"] == ["10", "11", "12"]  # Add called per item, the short list repeats
    assert CALLS["Add"] == 3
    assert result.outputs["6"]["text"] == ["33"]  # INPUT_IS_LIST: one call with the whole list
    assert CALLS["Sum"] == 1


def test_failing_node_fails_the_prompt_and_the_engine_stays_usable(executor: Executor) -> None:
    rec = Recorder()
    graph = {
        "1": {"class_type": "Number", "inputs": {"value": 4}},
        "2": {"class_type": "Boom", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result = executor.execute(graph, "p1", emit=rec)
    assert result.status == "error"
    error = rec.of("execution_error")[0]
    assert error["node_id"] == "2" and error["node_type"] == "Boom"
    assert error["exception_message"] == "boom on 4" and error["exception_type"] == "RuntimeError"
    assert error["executed"] == ["1"] and error["current_inputs"] == {"value": [4]}
    assert any("boom on 4" in line for line in error["traceback"])
    assert "execution_success" not in rec.names()
    # Earlier results stay cached, and the next prompt runs.
    again = executor.execute(sum_graph(4, 1), "p2")
    assert again.status == "success" and "1" in again.cached


def test_interrupt_between_nodes(executor: Executor) -> None:
    interrupt = Interrupt()
    interrupt.set()
    rec = Recorder()
    result = executor.execute(sum_graph(), "p1", emit=rec, interrupt=interrupt)
    assert result.status == "interrupted"
    assert rec.of("execution_interrupted")[0]["prompt_id"] == "p1"
    assert CALLS == {}


def test_interrupt_inside_a_node_that_reports_progress(executor: Executor) -> None:
    interrupt = Interrupt()
    rec = Recorder()
    graph = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Slow", "inputs": {"value": ["1", 0], "steps": 1000, "seconds": 0.005}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }

    def stop_soon() -> None:
        time.sleep(0.1)
        interrupt.set()

    threading.Thread(target=stop_soon).start()
    started = time.monotonic()
    result = executor.execute(graph, "p1", emit=rec, interrupt=interrupt)
    assert result.status == "interrupted"
    assert time.monotonic() - started < 3  # 1000 steps would take 5 s
    progress = rec.of("progress")
    assert progress and progress[0] == {"value": 1, "max": 1000, "prompt_id": "p1", "node": "2"}
    assert rec.of("execution_interrupted")[0]["node_id"] == "2"
    assert "Slow" not in CALLS


def test_node_expansion_runs_the_subgraph(executor: Executor) -> None:
    graph = {
        "1": {"class_type": "Number", "inputs": {"value": 21}},
        "2": {"class_type": "Doubler", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result = executor.execute(graph, "p1")
    assert result.status == "success", result.error
    assert result.outputs["3"]["text"] == ["42"]
    assert "2.x.add" in result.executed
    CALLS.clear()
    assert executor.execute(graph, "p2").executed == []


def test_async_nodes_overlap(executor: Executor) -> None:
    graph = {"1": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(3):
        graph[f"s{i}"] = {"class_type": "Sleep", "inputs": {"value": ["1", 0], "seconds": 0.5 + i * 0.01}}
        graph[f"o{i}"] = {"class_type": "Show", "inputs": {"value": [f"s{i}", 0]}}
    started = time.monotonic()
    result = executor.execute(graph, "p1")
    elapsed = time.monotonic() - started
    assert result.status == "success", result.error
    assert CALLS["Sleep"] == 3
    assert elapsed < 1.2  # three 0.5 s sleeps in sequence would take 1.5 s


def test_execution_blocker_skips_consumers(executor: Executor) -> None:
    rec = Recorder()
    graph = {
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "open_": False, "message": "closed for now"}},
        "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["1", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    result = executor.execute(graph, "p1", emit=rec)
    assert result.status == "success"
    assert "Add" not in CALLS and CALLS["Show"] == 1
    errors = rec.of("execution_error")
    assert len(errors) == 1 and errors[0]["exception_type"] == "ExecutionBlocked"
    assert errors[0]["exception_message"] == "closed for now"


def test_invalid_prompt_never_runs(executor: Executor) -> None:
    graph = sum_graph()
    graph["1"]["inputs"]["value"] = 5000
    result = executor.execute(graph, "p1")
    assert result.status == "invalid"
    assert result.error["error"]["type"] == "prompt_outputs_failed_validation"
    assert CALLS == {}


def test_cache_none_mode_reruns_everything() -> None:
    executor = Executor(sample_nodes.registry(), OutputCache("none"))
    executor.execute(sum_graph(), "p1")
    result = executor.execute(sum_graph(), "p2")
    assert sorted(result.executed) == ["1", "2", "3", "4"]


def test_classic_mode_keeps_only_what_the_current_prompt_reuses() -> None:
    executor = Executor(sample_nodes.registry(), OutputCache("classic"))
    executor.execute(sum_graph(1, 2), "a")
    executor.execute(sum_graph(1, 3), "b")  # keeps Number(1), drops the rest of prompt a
    result = executor.execute(sum_graph(1, 2), "a2")
    assert sorted(result.executed) == ["2", "3", "4"] and result.cached == ["1"]


def test_lru_mode_keeps_results_across_workflows(executor: Executor) -> None:
    executor.execute(sum_graph(1, 2), "a")
    executor.execute(sum_graph(1, 3), "b")
    assert executor.execute(sum_graph(1, 2), "a2").executed == []


def test_execute_works_while_an_event_loop_runs_in_this_thread(executor: Executor) -> None:
    import asyncio

    async def inside_a_loop() -> str:
        return executor.execute(sum_graph(), "p").status

    assert asyncio.run(inside_a_loop()) == "success"
