"""A plugin that loads fine but whose nodes raise when they run (both styles)."""
from __future__ import annotations

from graph.api import In, node

RUNS: list[str] = []


@node(category="raising_node", outputs="INT")
def ExplodingNode(value: int = In("INT")) -> int:
    """Always raises."""
    RUNS.append("ExplodingNode")
    raise ValueError(f"exploded on {value}")


class V1Exploding:
    CATEGORY = "raising_node"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    def run(self, value):
        RUNS.append("V1Exploding")
        raise ZeroDivisionError(f"V1 node divided {value} by zero")


NODE_CLASS_MAPPINGS = {"V1Exploding": V1Exploding}
