"""ComfyUI's API ("prompt") format: `{id: {"class_type": ..., "inputs": {name: literal | [source_id, slot]}}}`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Link:
    """A reference to output `slot` of node `node`."""

    node: str
    slot: int

    def to_json(self) -> list[Any]:
        return [self.node, self.slot]


@dataclass
class PromptNode:
    """One node of a parsed prompt; inputs hold literals or Links."""

    id: str
    class_type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    title: str | None = None

    def links(self) -> dict[str, Link]:
        return {name: v for name, v in self.inputs.items() if isinstance(v, Link)}


def is_link(value: Any) -> bool:
    """A 2-element list [source_id, output_index] is a link; anything else is a literal."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def parse_input(value: Any) -> Any:
    """A literal, a Link, or the list a `{"__value__": [...]}` wrapper protects from being read as a link."""
    if is_link(value):
        return Link(str(value[0]), int(value[1]))
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def node_title(raw: dict[str, Any]) -> str | None:
    meta = raw.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) else None


def prompt_to_json(nodes: dict[str, PromptNode]) -> dict[str, Any]:
    """Back to the API format (for history, PNG metadata and expansion)."""
    out: dict[str, Any] = {}
    for node_id, node in nodes.items():
        inputs = {k: (v.to_json() if isinstance(v, Link) else
                      ({"__value__": v} if is_link(v) else v)) for k, v in node.inputs.items()}
        entry: dict[str, Any] = {"class_type": node.class_type, "inputs": inputs}
        if node.title:
            entry["_meta"] = {"title": node.title}
        out[node_id] = entry
    return out
