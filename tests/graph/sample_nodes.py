"""Small pure-Python nodes the engine tests run (no models, no torch)."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from graph.context import progress
from graph.declare import Boolean, Combo, Float, Hidden, In, Int, String, node
from graph.nodedef import ExecutionBlocker, Result
from graph.registry import NodeRegistry
from graph.schema import Output

CALLS: dict[str, int] = {}
_lock = threading.Lock()


def count(name: str) -> None:
    with _lock:
        CALLS[name] = CALLS.get(name, 0) + 1


@node(outputs="INT", category="test")
def Number(value: int = Int(0, min=-1000, max=1000)) -> int:
    """Give an integer."""
    count("Number")
    return value


@node(outputs="INT", category="test")
def Add(a: int = In("INT"), b: int = In("INT")) -> int:
    """Add two integers."""
    count("Add")
    return a + b


@node(outputs="FLOAT", category="test")
def Scale(value: int = In("INT"), factor: float = Float(1.0, min=0.0, max=10.0, step=0.5)) -> float:
    """Multiply by a factor."""
    count("Scale")
    return value * factor


@node(outputs=("STRING", "INT"), category="test")
def Describe(value: Any = In("INT,FLOAT"), mode: str = Combo(["short", "long"]),
             prefix: str = String("n=", multiline=False), loud: bool = Boolean(False)) -> tuple[str, int]:
    """Describe a number."""
    count("Describe")
    text = f"{prefix}{value}" if mode == "short" else f"{prefix}the number {value}"
    return (text.upper() if loud else text, len(text))


@node(output_node=True, category="test")
def Show(value: Any = In("*"), unique_id: str = Hidden("UNIQUE_ID")) -> Result:
    """Show a value in the UI."""
    count("Show")
    return Result(ui={"text": [str(value)], "node": [unique_id]})


@node(outputs="INT", category="test")
def Boom(value: int = In("INT")) -> int:
    """Always fail."""
    count("Boom")
    raise RuntimeError(f"boom on {value}")


def _switch_needs(use_second: bool, first: Any = None, second: Any = None) -> list[str]:
    return ["second"] if use_second else ["first"]


@node(outputs="INT", category="test", check_lazy=_switch_needs)
def Switch(use_second: bool = Boolean(False), first: int = In("INT", lazy=True),
           second: int = In("INT", lazy=True)) -> int:
    """Pass one of two lazily evaluated inputs."""
    count("Switch")
    return second if use_second else first


@node(outputs=Output("INT", is_list=True), category="test")
def Range(n: int = Int(3, min=0, max=100)) -> list[int]:
    """Give the list 0..n-1."""
    count("Range")
    return list(range(n))


@node(outputs="INT", category="test", input_is_list=True)
def Sum(values: list[int] = In("INT")) -> int:
    """Sum a list of integers in one call."""
    count("Sum")
    return sum(values)


@node(outputs="INT", category="test")
def Slow(value: int = In("INT"), steps: int = Int(5, min=1, max=1000), seconds: float = Float(0.01, min=0, max=10)) -> int:
    """Count steps, reporting progress (interruptible)."""
    import time

    for i in range(steps):
        time.sleep(seconds)
        progress(i + 1, steps)
    count("Slow")
    return value


@node(outputs="INT", category="test")
async def Sleep(value: int = In("INT"), seconds: float = Float(0.2, min=0, max=10)) -> int:
    """Wait without blocking other async nodes."""
    await asyncio.sleep(seconds)
    count("Sleep")
    return value


@node(outputs="INT", category="test")
def Doubler(value: int = In("INT"), unique_id: str = Hidden("UNIQUE_ID")) -> Result:
    """Expand into a sub-graph that adds the value to itself."""
    count("Doubler")
    this = f"{unique_id}.x"
    graph = {f"{this}.n": {"class_type": "Number", "inputs": {"value": value}},
             f"{this}.add": {"class_type": "Add", "inputs": {"a": [f"{this}.n", 0], "b": [f"{this}.n", 0]}}}
    return Result(outputs=([f"{this}.add", 0],), expand=graph)


@node(outputs="INT", category="test")
def Gate(value: int = In("INT"), open_: bool = Boolean(True), message: str = String("")) -> Any:
    """Block everything downstream when closed."""
    count("Gate")
    return value if open_ else ExecutionBlocker(message or None)


NODES = [Number, Add, Scale, Describe, Show, Boom, Switch, Range, Sum, Slow, Sleep, Doubler, Gate]


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    reg.add_all(NODES)
    return reg
