"""The prompt as a running node sees it (ComfyUI's `DynamicPrompt`, handed to `DYNPROMPT` hidden inputs).

A read-only view of one execution: the nodes of the prompt plus those that node expansion added while
it runs, with the maps from an added node to the node that expanded it and to the node the editor
shows for it. Plugins use it to read other nodes' inputs (`get_node`) and to find a node's real id.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .workflow import Link, PromptNode


class NodeNotFoundError(KeyError):
    """No node with this id in the prompt (ComfyUI's exception of the same name)."""


class DynamicPrompt:
    """The nodes of one execution, original and expanded; `get_node` gives them in API format."""

    def __init__(self, original: Any, nodes: Mapping[str, PromptNode], parent: Mapping[str, str],
                 display: Mapping[str, str]) -> None:
        self._original = original
        self._nodes = nodes
        self._parent = parent
        self._display = display

    def get_original_prompt(self) -> Any:
        """The prompt as it was queued."""
        return self._original

    def get_node(self, node_id: str) -> dict[str, Any]:
        """`{"class_type": ..., "inputs": {...}}` with links as `[node_id, slot]`."""
        node = self._nodes.get(str(node_id))
        if node is None:
            raise NodeNotFoundError(f"Node {node_id} not found")
        inputs = {name: value.to_json() if isinstance(value, Link) else value for name, value in node.inputs.items()}
        return {"class_type": node.class_type, "inputs": inputs}

    def has_node(self, node_id: str) -> bool:
        return str(node_id) in self._nodes

    def all_node_ids(self) -> set[str]:
        return set(self._nodes)

    def get_parent_node_id(self, node_id: str) -> str | None:
        """The node whose expansion added this one (None for the prompt's own nodes)."""
        return self._parent.get(str(node_id))

    def get_real_node_id(self, node_id: str) -> str:
        """The prompt's own node this one descends from through expansions (itself if it is one)."""
        node_id = str(node_id)
        while node_id in self._parent:
            node_id = self._parent[node_id]
        return node_id

    def get_display_node_id(self, node_id: str) -> str:
        """The node the editor highlights while this one runs."""
        return self._display.get(str(node_id), str(node_id))
