"""Executor overhead: validate and run a 1,000-node workflow of trivial nodes, then re-run it from the cache.

    python bench/bench_executor.py [--nodes 1000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graph.cache import OutputCache  # noqa: E402
from graph.declare import In, Int, node  # noqa: E402
from graph.executor import Executor  # noqa: E402
from graph.nodedef import Result  # noqa: E402
from graph.registry import NodeRegistry  # noqa: E402
from graph.validation import validate_prompt  # noqa: E402


@node(outputs="INT")
def Const(value: int = Int(0, min=0, max=1 << 30)) -> int:
    """A constant."""
    return value


@node(outputs="INT")
def Inc(value: int = In("INT"), step: int = Int(1, min=0, max=100)) -> int:
    """Add a step."""
    return value + step


@node(output_node=True)
def Sink(value: int = In("INT")) -> Result:
    """Report the value."""
    return Result(ui={"value": [value]})


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    reg.add_all([Const, Inc, Sink])
    return reg


def workflow(nodes: int, width: int = 10, seed: int = 0) -> dict[str, Any]:
    """`width` parallel chains of Inc nodes, each ending in a Sink: `nodes` nodes in all."""
    prompt: dict[str, Any] = {"c": {"class_type": "Const", "inputs": {"value": seed}}}
    inner = nodes - 1 - width  # the Const and one Sink per chain are the rest
    for chain in range(width):
        prev = "c"
        for i in range(inner // width + (1 if chain < inner % width else 0)):
            nid = f"{chain}.{i}"
            prompt[nid] = {"class_type": "Inc", "inputs": {"value": [prev, 0], "step": chain % 3}}
            prev = nid
        prompt[f"{chain}.out"] = {"class_type": "Sink", "inputs": {"value": [prev, 0]}}
    return prompt


def measure(nodes: int = 1000, repeats: int = 5) -> dict[str, float]:
    """Median figures over `repeats` runs, in seconds (and microseconds per node)."""
    reg = registry()
    validate_s, first_s, cached_s, none_s = [], [], [], []
    for r in range(repeats):
        prompt = workflow(nodes, seed=r)
        count = len(prompt)
        t0 = time.perf_counter()
        outcome = validate_prompt(prompt, reg)
        validate_s.append(time.perf_counter() - t0)
        assert outcome.ok, outcome.messages()
        executor = Executor(reg, OutputCache("lru"))
        t0 = time.perf_counter()
        result = executor.execute(prompt, f"first{r}")
        first_s.append(time.perf_counter() - t0)
        assert result.ok and len(result.executed) == count
        t0 = time.perf_counter()
        again = executor.execute(prompt, f"again{r}")
        cached_s.append(time.perf_counter() - t0)
        assert again.ok and again.executed == []
        uncached = Executor(reg, OutputCache("none"))
        t0 = time.perf_counter()
        uncached.execute(prompt, f"none{r}")
        none_s.append(time.perf_counter() - t0)
    # The nodes themselves cost well under a microsecond: the execution time is the engine's overhead.
    med = statistics.median
    return {"nodes": count, "validate_s": med(validate_s), "execute_s": med(first_s),
            "execute_no_cache_s": med(none_s), "cached_rerun_s": med(cached_s),
            "per_node_us": med(first_s) / count * 1e6, "per_node_validate_us": med(validate_s) / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fig = measure(args.nodes, args.repeats)
    print(f"workflow of {fig['nodes']} trivial nodes (median of {args.repeats}):")
    print(f"  validation              {fig['validate_s'] * 1e3:8.1f} ms  ({fig['per_node_validate_us']:.1f} us/node)")
    print(f"  execution (validate+run){fig['execute_s'] * 1e3:8.1f} ms  ({fig['per_node_us']:.1f} us/node)")
    print(f"  execution, cache off    {fig['execute_no_cache_s'] * 1e3:8.1f} ms")
    print(f"  full-cache re-run       {fig['cached_rerun_s'] * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
