"""Content-addressed keys and the byte-bounded LRU output cache."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from graph.cache import CacheEntry, KeyBuilder, OutputCache, estimate_nbytes
from graph.validation import validate_prompt

from . import sample_nodes

REG = sample_nodes.registry()


def keys_of(prompt: dict[str, Any], fingerprint: Any = None) -> dict[str, str]:
    outcome = validate_prompt(prompt, REG)
    assert outcome.ok, outcome.messages()
    builder = KeyBuilder(REG, outcome.nodes, lambda node: fingerprint)
    return {node_id: builder.key(node_id) for node_id in outcome.nodes}


def chain(value: int, ids: tuple[str, str] = ("1", "2")) -> dict[str, Any]:
    return {ids[0]: {"class_type": "Number", "inputs": {"value": value}},
            ids[1]: {"class_type": "Show", "inputs": {"value": [ids[0], 0]}}}


def test_keys_ignore_node_ids_and_follow_content() -> None:
    a = keys_of(chain(1, ("1", "2")))
    b = keys_of(chain(1, ("x", "y")))
    c = keys_of(chain(2))
    assert a["1"] == b["x"] and a["2"] != b["y"]  # Show reads UNIQUE_ID, so its id is part of its key
    assert a["1"] != c["1"] and a["2"] != c["2"]


def test_upstream_change_changes_every_downstream_key() -> None:
    base = {"1": {"class_type": "Number", "inputs": {"value": 1}},
            "2": {"class_type": "Scale", "inputs": {"value": ["1", 0], "factor": 2.0}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    changed = {**base, "1": {"class_type": "Number", "inputs": {"value": 7}}}
    k1, k2 = keys_of(base), keys_of(changed)
    assert all(k1[n] != k2[n] for n in "123")


def test_nan_fingerprint_never_matches() -> None:
    registry = sample_nodes.registry()
    registry._nodes["Number"].has_fingerprint = True  # type: ignore[attr-defined]
    try:
        outcome = validate_prompt(chain(1), registry)
        nan = KeyBuilder(registry, outcome.nodes, lambda node: math.nan)
        stable = KeyBuilder(registry, outcome.nodes, lambda node: "sha:abc")
        again = KeyBuilder(registry, outcome.nodes, lambda node: "sha:abc")
        other = KeyBuilder(registry, outcome.nodes, lambda node: "sha:def")
        assert nan.key("1").startswith("unique:")
        assert stable.key("1") == again.key("1") != other.key("1")
    finally:
        registry._nodes["Number"].has_fingerprint = False  # type: ignore[attr-defined]


def test_long_chains_do_not_recurse() -> None:
    prompt: dict[str, Any] = {"0": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(1, 3000):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": ["0", 0]}}
    prompt["end"] = {"class_type": "Show", "inputs": {"value": ["2999", 0]}}
    assert len(set(keys_of(prompt).values())) == 3001


def entry(nbytes: int) -> CacheEntry:
    return CacheEntry([[np.zeros(nbytes, dtype=np.uint8)]])


def test_byte_budget_evicts_least_recently_used() -> None:
    cache = OutputCache("lru", max_bytes=1000)
    cache.put("a", entry(400))
    cache.put("b", entry(400))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", entry(400))  # 1200 > 1000: b goes
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.nbytes == 800 and cache.stats()["evictions"] == 1
    cache.put("huge", entry(5000))  # bigger than the whole budget: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2


def test_count_budget_and_clear() -> None:
    cache = OutputCache("lru", max_bytes=None, max_entries=2)
    for key in "abc":
        cache.put(key, entry(1))
    assert list(cache._entries) == ["b", "c"]
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="cache mode 'fast' is not one of"):
        OutputCache("fast")  # type: ignore[arg-type]


def test_estimate_counts_shared_storage_once() -> None:
    import torch  # noqa: PLC0415 - the rest of this file runs without torch

    t = torch.zeros(1000, dtype=torch.float32)
    view = t[10:20]
    assert estimate_nbytes([t, view, {"samples": t}]) == 4000
    assert estimate_nbytes([torch.zeros(10, dtype=torch.float16)]) == 20


def test_shared_upstream_nodes_get_stable_keys() -> None:
    """A diamond (one node feeding two that meet again) is not a cycle: every key is content-addressed."""
    diamond = {"1": {"class_type": "Number", "inputs": {"value": 1}},
               "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
               "3": {"class_type": "Scale", "inputs": {"value": ["1", 0], "factor": 2.0}},
               "4": {"class_type": "Describe", "inputs": {"value": ["3", 0], "mode": "short", "prefix": "",
                                                          "loud": False}},
               "5": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["4", 1]}},
               "6": {"class_type": "Show", "inputs": {"value": ["5", 0]}}}
    first, second = keys_of(diamond), keys_of(diamond)
    assert first == second
    assert not any(k.startswith("unique:") for k in first.values())
