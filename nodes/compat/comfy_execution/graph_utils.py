"""`GraphBuilder`: build the sub-graph a node returns as `{"result": ..., "expand": graph.finalize()}`.

Node ids are prefixed `"<parent id>.<call index>.<graph index>."` so that expansions never collide:
the parent id and call index come from the running node's context (`graph.context.current()`),
the graph index counts the builders made during that call.
"""
from __future__ import annotations

import uuid
from typing import Any

from graph import context
from graph.nodedef import ExecutionBlocker

__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "add_graph_prefix", "is_link"]

# The per-call counter lives on the node's context object, so two calls never share it.
_COUNTER = "_graph_builder_index"
_DEFAULT = "_graph_builder_default"


def is_link(obj: Any) -> bool:
    """True for an API-format link: `[node_id: str, output_index: int]`."""
    return (isinstance(obj, (list, tuple)) and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], int) and not isinstance(obj[1], bool))


class Node:
    """One node of a GraphBuilder: set inputs, link its outputs with `out(index)`."""

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = dict(inputs)
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        """Show this node's progress and errors on another node of the editor."""
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        data: dict[str, Any] = {"class_type": self.class_type, "inputs": dict(self.inputs)}
        if self.override_display_id is not None:
            data["override_display_id"] = self.override_display_id
        return data


class GraphBuilder:
    """Collects nodes under a unique id prefix; `finalize()` gives the API-format dict to expand."""

    _fallback: tuple[str, int, int] | None = None

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else self.alloc_prefix()
        self.nodes: dict[str, Node] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        """Fix the prefix parts for builders made from now on in this node call."""
        ctx = context.current()
        if ctx is not None:
            setattr(ctx, _DEFAULT, (prefix_root, call_index))
            setattr(ctx, _COUNTER, graph_index)
        else:
            cls._fallback = (prefix_root, call_index, graph_index)

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        """A fresh `"<root>.<call>.<graph>."` prefix; missing parts come from the running node."""
        ctx = context.current()
        if ctx is not None:
            default_root, default_call = getattr(ctx, _DEFAULT, (ctx.node_id, ctx.call_index))
            if graph_index is None:
                graph_index = getattr(ctx, _COUNTER, 0)
                setattr(ctx, _COUNTER, graph_index + 1)
        elif cls._fallback is not None:
            default_root, default_call, counter = cls._fallback
            if graph_index is None:
                graph_index = counter
                cls._fallback = (default_root, default_call, counter + 1)
        else:
            # Outside any node (a script building a prompt): a random root cannot collide.
            default_root, default_call = uuid.uuid4().hex[:12], 0
        root = root if root is not None else default_root
        call_index = call_index if call_index is not None else default_call
        return f"{root}.{call_index}.{graph_index if graph_index is not None else 0}."

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> Node:  # noqa: A002 - ComfyUI's name
        """Add (or fetch, if the id exists) a node; keyword arguments are its inputs."""
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        full_id = self.prefix + str(id)
        if full_id in self.nodes:
            return self.nodes[full_id]
        node = Node(full_id, class_type, kwargs)
        self.nodes[full_id] = node
        return node

    def lookup_node(self, id: str) -> Node | None:  # noqa: A002
        return self.nodes.get(self.prefix + id)

    def remove_node(self, id: str) -> None:  # noqa: A002
        self.nodes.pop(self.prefix + id, None)

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        """Point every input linked to `[node_id, index]` at new_value (a link, a literal, or None to drop it)."""
        full = self.prefix + node_id
        for node in self.nodes.values():
            for key, value in list(node.inputs.items()):
                if is_link(value) and value[0] == full and value[1] == index:
                    node.set_input(key, new_value)

    def finalize(self) -> dict[str, dict[str, Any]]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}


def add_graph_prefix(graph: dict[str, Any], outputs: list[Any], prefix: str) -> tuple[dict[str, Any], list[Any]]:
    """Prefix every node id of an API-format graph and of the links into it (to expand a stored graph)."""
    def relink(value: Any) -> Any:
        return [prefix + value[0], value[1]] if is_link(value) else value

    new_graph = {prefix + node_id: {**node, "inputs": {k: relink(v) for k, v in node.get("inputs", {}).items()}}
                 for node_id, node in graph.items()}
    return new_graph, [relink(o) for o in outputs]
