"""`GraphBuilder`: unique id prefixes from the running node, ComfyUI's builder methods, links."""
from __future__ import annotations

from typing import Any

from graph.executor import Executor
from graph.registry import NodeRegistry
from nodes.compat.comfy_execution.graph import ExecutionBlocker
from nodes.compat.comfy_execution.graph_utils import GraphBuilder, add_graph_prefix, is_link


def test_prefix_comes_from_the_running_node(node_run: Any) -> None:
    with node_run("12", call_index=3):
        first, second = GraphBuilder(), GraphBuilder()
    with node_run("12", call_index=4):
        third = GraphBuilder()
    assert (first.prefix, second.prefix, third.prefix) == ("12.3.0.", "12.3.1.", "12.4.0.")
    assert GraphBuilder(prefix="mine.").prefix == "mine."


def test_default_prefix_set_by_the_node(node_run: Any) -> None:
    with node_run("1"):
        GraphBuilder.set_default_prefix("loop", 7, 2)
        assert GraphBuilder().prefix == "loop.7.2."
        assert GraphBuilder().prefix == "loop.7.3."
        assert GraphBuilder.alloc_prefix(root="r", call_index=0, graph_index=9) == "r.0.9."


def test_outside_a_node_prefixes_do_not_collide() -> None:
    assert GraphBuilder().prefix != GraphBuilder().prefix


def test_builder_methods() -> None:
    graph = GraphBuilder(prefix="p.")
    a = graph.node("Number", value=1)
    b = graph.node("Add", id="sum", a=a.out(0), b=a.out(0))
    assert (a.id, b.id) == ("p.1", "p.sum")
    assert graph.node("Add", id="sum") is b and graph.lookup_node("sum") is b
    b.set_override_display_id("9")
    b.set_input("b", None)
    assert b.get_input("a") == ["p.1", 0] and b.get_input("b") is None
    c = graph.node("Show", value=b.out(0))
    graph.replace_node_output("sum", 0, 42)
    assert c.get_input("value") == 42
    graph.remove_node("1")
    assert graph.finalize() == {
        "p.sum": {"class_type": "Add", "inputs": {"a": ["p.1", 0]}, "override_display_id": "9"},
        "p.2": {"class_type": "Show", "inputs": {"value": 42}}}


def test_is_link_and_prefixing() -> None:
    assert is_link(["3", 0]) and is_link(("3", 1))
    assert not is_link(["3", "0"]) and not is_link([3, 0]) and not is_link(["3", True]) and not is_link("30")
    graph, outputs = add_graph_prefix({"1": {"class_type": "A", "inputs": {"x": ["2", 0], "y": 5}}}, [["1", 0], 7], "q.")
    assert graph == {"q.1": {"class_type": "A", "inputs": {"x": ["q.2", 0], "y": 5}}} and outputs == [["q.1", 0], 7]


class Number:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value: int) -> tuple[int]:
        return (value,)


class Twice:
    """Mapped over a list of two values: each call expands its own sub-graph."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"forceInput": True})}}

    def run(self, value: int) -> dict[str, Any]:
        graph = GraphBuilder()
        node = graph.node("Number", value=value * 2)
        return {"result": (node.out(0),), "expand": graph.finalize()}


class Pair:
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    def run(self) -> tuple[list[Any]]:
        return ([3, 4],)


class Collect:
    RETURN_TYPES = ()
    INPUT_IS_LIST = True
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"values": ("INT", {"forceInput": True})}}

    def run(self, values: list[Any]) -> dict[str, Any]:
        return {"ui": {"values": [v if not isinstance(v, ExecutionBlocker) else "blocked" for v in values]}}


def test_expansions_of_list_calls_get_distinct_prefixes() -> None:
    registry = NodeRegistry()
    registry.add_v1({"Number": Number, "Twice": Twice, "Pair": Pair, "Collect": Collect})
    result = Executor(registry).execute({"1": {"class_type": "Pair", "inputs": {}},
                                         "2": {"class_type": "Twice", "inputs": {"value": ["1", 0]}},
                                         "3": {"class_type": "Collect", "inputs": {"values": ["2", 0]}}})
    assert result.ok, result.error
    assert result.outputs["3"] == {"values": [6, 8]}
    assert sorted(n for n in result.executed if n.startswith("2.")) == ["2.0.0.1", "2.1.0.1"]
