"""What the prompt fuzzing tests share: the verdict checks, hypothesis settings and big graph builders."""
from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, settings

from graph.registry import NodeRegistry
from graph.validation import MESSAGES, validate_prompt
from tests.hardening.strategies import deep

TOP_LEVEL_ERRORS = {"no_prompt", "invalid_prompt", "prompt_no_outputs", "prompt_outputs_failed_validation"}
NODE_ERRORS = set(MESSAGES)
HANG_SECONDS = 30.0  # a verdict slower than this counts as a hang


def fuzz_settings(heavy: bool, default: int, many: int) -> settings:
    """Quick and reproducible by default; many random cases with --heavy."""
    return settings(max_examples=many if heavy else default, deadline=None, database=None,
                    derandomize=not heavy, suppress_health_check=list(HealthCheck))


def check_verdict(prompt: Any, registry: NodeRegistry) -> Any:
    started = time.perf_counter()
    outcome = validate_prompt(prompt, registry)
    assert time.perf_counter() - started < HANG_SECONDS
    body = json.dumps(outcome.response())  # what the server sends with a 400
    assert body
    if outcome.ok:
        assert outcome.outputs and all(out in outcome.nodes for out in outcome.outputs)
        assert outcome.error is None
    else:
        assert outcome.error is not None and outcome.error["type"] in TOP_LEVEL_ERRORS, outcome.error
        assert outcome.error["message"]
    for node_id, errors in outcome.node_errors.items():
        assert errors, node_id
        for error in errors:
            assert error.type in NODE_ERRORS, error
            assert node_id in error.details, (node_id, error.details)  # every error names its node
    return outcome


def chain(length: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "HardValues", "inputs": {"count": 1, "scale": 1.0, "text": "a",
                                                                            "flag": True, "mode": "plain"}}}
    for i in range(1, length):
        prompt[str(i)] = {"class_type": "HardCombine", "inputs": {"a": [str(i - 1), 0]}}
    prompt["sink"] = {"class_type": "HardSink", "inputs": {"source": [str(length - 1), 0], "label": "end"}}
    return prompt


def fan(width: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "HardValues", "inputs": {"count": 1, "scale": 1.0, "text": "a",
                                                                            "flag": True, "mode": "plain"}}}
    for i in range(1, width):
        prompt[str(i)] = {"class_type": "HardSink", "inputs": {"source": ["0", 0], "label": str(i)}}
    return prompt


def cycle(length: int) -> dict[str, Any]:
    prompt = chain(length)
    prompt["0"] = {"class_type": "HardCombine", "inputs": {"a": [str(length - 1), 0]}}
    return prompt


def outputs_on_chain(size: int) -> dict[str, Any]:
    """`size` output nodes all fed by the end of a chain of `size` nodes."""
    prompt = chain(size)
    del prompt["sink"]
    for i in range(size):
        prompt[f"s{i}"] = {"class_type": "HardSink", "inputs": {"source": [str(size - 1), 0], "label": "x"}}
    return prompt


def big_graphs(size: int) -> dict[str, tuple[dict[str, Any], bool]]:
    """name -> (prompt, should it be accepted)."""
    spoiled = outputs_on_chain(size)
    spoiled["0"]["inputs"]["count"] = -1
    self_linked = chain(size)
    self_linked["7"]["inputs"]["a"] = ["7", 0]
    dangling = chain(size)
    dangling[str(size // 2)]["inputs"]["a"] = ["nowhere", 0]
    return {"chain": (chain(size), True), "fan": (fan(size), True), "cycle": (cycle(size), False),
            "outputs_on_chain": (outputs_on_chain(size), True), "outputs_on_spoiled_chain": (spoiled, False),
            "self_link": (self_linked, False), "dangling": (dangling, False),
            "deep_value": ({**chain(3), "1": {"class_type": "HardCombine", "inputs": {"a": ["0", 0], "x": deep(400)}}},
                           True),
            "deep_literal": ({"0": {"class_type": "HardValues",
                                    "inputs": {"count": deep(400), "scale": 1.0, "text": "a", "flag": True,
                                               "mode": "plain"}},
                              "s": {"class_type": "HardSink", "inputs": {"source": ["0", 0]}}}, False)}
