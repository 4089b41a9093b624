"""Pure-Python nodes the hardening tests fuzz and load a server with (no torch): quick for every input.

Every widget type with ranges, optional and list inputs, a custom validation, a node that runs out of
memory on request, and output nodes, so that any prompt the fuzzer gets accepted also runs quickly.
"""
from __future__ import annotations

from typing import Any

from graph.declare import Boolean, Combo, Float, In, Int, String, node
from graph.nodedef import Result
from graph.schema import Output

MODES = ["plain", "upper", "reverse"]


@node(category="hardening", outputs="HARD")
def HardValues(count: int = Int(3, min=0, max=64), scale: float = Float(1.0, min=-10.0, max=10.0),
               text: str = String("x"), flag: bool = Boolean(False), mode: str = Combo(MODES),
               extra: int = Int(0, min=-5, max=5, optional=True)) -> dict[str, Any]:
    """A small record made from every widget type."""
    shown = text.upper() if mode == "upper" else text[::-1] if mode == "reverse" else text
    return {"count": count, "scale": scale, "text": shown[:64], "flag": flag, "extra": extra}


@node(category="hardening", outputs="HARD")
def HardCombine(a: dict = In("HARD"), b: dict = In("HARD", optional=True)) -> dict[str, Any]:
    """Merge two records (b optional)."""
    return {"count": a["count"] + (b["count"] if b else 0), "parts": 1 + (b.get("parts", 1) if b else 0)}


def _even(count: int) -> bool | str:
    return True if count % 2 == 0 else f"input 'count' is {count}, must be even"


@node(category="hardening", outputs="HARD", validate=_even)
def HardEven(source: dict = In("HARD"), count: int = Int(2, min=0, max=100)) -> dict[str, Any]:
    """A node with its own validation rule (count must be even)."""
    return {**source, "even": count}


@node(category="hardening", outputs=Output("HARD", is_list=True))
def HardSplit(source: dict = In("HARD"), pieces: int = Int(2, min=1, max=8)) -> list[dict[str, Any]]:
    """A list output: one record per piece."""
    return [{**source, "piece": i} for i in range(pieces)]


@node(category="hardening", output_node=True)
def HardSink(source: dict = In("HARD"), label: str = String("sink")) -> Result:
    """Report the record as text."""
    return Result(ui={"text": [f"{label[:32]}: {sorted(source)}"]})


@node(category="hardening", output_node=True)
def HardMemory(source: dict = In("HARD"), fail: bool = Boolean(True)) -> Result:
    """Run out of memory (MemoryError) when `fail`; report the record otherwise."""
    if fail:
        raise MemoryError("hardening test: this node ran out of memory on purpose")
    return Result(ui={"text": ["enough memory"]})
