"""Content-addressed cache keys and the byte-bounded output cache.

A node's key hashes its class_type and version, its literal inputs, the keys and output slots of
the nodes it links to (a Merkle hash, so identical sub-graphs share results across prompts and
node ids do not matter), its fingerprint (IS_CHANGED) if it reads the outside world, and its node
id only if it declares itself not idempotent. A NaN or failing fingerprint makes a key that never
matches, so that node always runs.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .registry import NodeRegistry
from .workflow import Link, PromptNode


class _Unkeyable(Exception):
    """A value that cannot be part of a key; the node gets a fresh key and always runs."""


def _canonical(value: Any, depth: int = 0) -> Any:
    if depth > 64:
        raise _Unkeyable
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise _Unkeyable
        return ["float", repr(value)]
    if isinstance(value, (list, tuple)):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {"dict": sorted([str(k), _canonical(v, depth + 1)] for k, v in value.items())}
    raise _Unkeyable


def _fresh() -> str:
    return "unique:" + uuid.uuid4().hex


class KeyBuilder:
    """Computes (and memoises) the cache key of every node of one prompt, including expanded nodes."""

    def __init__(self, registry: NodeRegistry, nodes: Mapping[str, PromptNode],
                 fingerprint: Callable[[PromptNode], Any]) -> None:
        self.registry = registry
        self.nodes = nodes
        self.fingerprint = fingerprint
        self._keys: dict[str, str] = {}

    def key(self, node_id: str) -> str:
        known = self._keys.get(node_id)
        if known is not None:
            return known
        # Iterative post-order walk: a chain of thousands of nodes must not hit the recursion limit.
        # `on_path` holds the nodes whose inputs are being keyed; meeting one again is a cycle, and
        # the node that closes it gets a fresh key (it never matches, so it always runs).
        stack: list[tuple[str, bool]] = [(node_id, False)]
        on_path: set[str] = set()
        while stack:
            current, inputs_done = stack.pop()
            if current in self._keys:
                continue
            if inputs_done:
                on_path.discard(current)
                self._keys[current] = self._compute(current)
                continue
            on_path.add(current)
            stack.append((current, True))
            for link in self.nodes[current].links().values():
                if link.node in self.nodes and link.node not in self._keys and link.node not in on_path:
                    stack.append((link.node, False))
        return self._keys[node_id]

    def _compute(self, node_id: str) -> str:
        node = self.nodes[node_id]
        node_def = self.registry[node.class_type]
        schema = node_def.schema
        try:
            inputs = []
            for name in sorted(node.inputs):
                value = node.inputs[name]
                if isinstance(value, Link):
                    upstream = self._keys.get(value.node)
                    if upstream is None:  # a link into a cycle or a missing node: never share
                        raise _Unkeyable
                    inputs.append([name, "link", upstream, value.slot])
                else:
                    inputs.append([name, "value", _canonical(value)])
            identity: list[Any] = [schema.name, schema.version]
            if node_def.has_fingerprint:
                identity.append(["fingerprint", _canonical(self.fingerprint(node))])
            if schema.not_idempotent or "UNIQUE_ID" in schema.hidden.values():
                identity.append(["node", node_id])
            payload = json.dumps([identity, inputs], separators=(",", ":"), ensure_ascii=False)
        except _Unkeyable:
            return _fresh()
        return hashlib.blake2b(payload.encode(), digest_size=20).hexdigest()


def estimate_nbytes(value: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes held by an output: tensor storages counted once, model wrappers report their own (0)."""
    seen = set() if seen is None else seen
    if depth > 32 or value is None or isinstance(value, (bool, int, float)):
        return 0
    own = getattr(value, "cache_nbytes", None)
    if callable(own):
        return int(own())
    storage = getattr(value, "untyped_storage", None)
    if callable(storage) and type(value).__module__.startswith("torch"):
        st = storage()
        ptr = st.data_ptr()
        if ptr in seen:
            return 0
        seen.add(ptr)
        return int(st.nbytes())
    if hasattr(value, "nbytes") and hasattr(value, "dtype"):  # numpy arrays
        return int(value.nbytes)
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, Mapping):
        return sum(estimate_nbytes(v, seen, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return sum(estimate_nbytes(v, seen, depth + 1) for v in value)
    return sys.getsizeof(value)


@dataclass
class CacheEntry:
    """The outputs of one node: per output slot, the list of values (one per list item), and its UI dict."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None = None
    nbytes: int = 0


CacheMode = Literal["lru", "classic", "none"]


class OutputCache:
    """Node outputs by key, bounded by bytes (and optionally by count), least recently used evicted.

    Modes: `lru` keeps results across workflows within the budgets; `classic` keeps only what the
    current workflow can reuse; `none` keeps nothing between prompts.
    """

    def __init__(self, mode: CacheMode = "lru", max_bytes: int | None = 2 << 30,
                 max_entries: int | None = None) -> None:
        if mode not in ("lru", "classic", "none"):
            raise ValueError(f"cache mode {mode!r} is not one of 'lru', 'classic', 'none'")
        self.mode = mode
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        if self.mode == "none" or key.startswith("unique:"):
            return
        entry.nbytes = estimate_nbytes(entry.outputs)
        with self._lock:
            if self.max_bytes is not None and entry.nbytes > self.max_bytes:
                return  # larger than the whole budget: keeping it would evict everything else
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = entry
            self._bytes += entry.nbytes
            self._evict()

    def _evict(self) -> None:
        while self._entries and ((self.max_bytes is not None and self._bytes > self.max_bytes)
                                 or (self.max_entries is not None and len(self._entries) > self.max_entries)):
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes
            self.evictions += 1

    def begin_prompt(self, keys: Iterable[str]) -> None:
        """Called with the keys of a new prompt: classic mode drops what it cannot reuse, none drops all."""
        if self.mode == "lru":
            return
        keep = set(keys) if self.mode == "classic" else set()
        with self._lock:
            for key in [k for k in self._entries if k not in keep]:
                self._bytes -= self._entries.pop(key).nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, "entries": len(self._entries), "bytes": self._bytes,
                "max_bytes": self.max_bytes, "max_entries": self.max_entries, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}
