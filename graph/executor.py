"""The executor: validate a prompt, find what the cache already holds, run the rest in dependency order.

Only the output nodes (or the requested targets) and what they need run. Lazy inputs are evaluated
only when a node asks for them; nodes are mapped over list inputs as ComfyUI does; a node may expand
into a sub-graph at run time; async nodes overlap; an interrupt stops between nodes and at every
progress report. Every event goes through one `emit(event, data)` callback. A failing node fails its
prompt, never the process.
"""
from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .aio import resolve, run_coroutine
from .cache import CacheEntry, KeyBuilder, OutputCache
from .context import Emit, ExecutionInterrupted, Interrupt, NodeContext, reset_current, set_current
from .dynamic_prompt import DynamicPrompt
from .nodedef import ExecutionBlocker, NodeDef, Result
from .registry import NodeRegistry
from .validation import ValidationOutcome, link_graph, upstream_closure, validate_prompt
from .workflow import Link, PromptNode, parse_input


class DependencyCycleError(RuntimeError):
    """Nodes created at run time wait on each other."""


class ExpansionError(RuntimeError):
    """A node returned a sub-graph that cannot be added."""


@dataclass
class ExecutionResult:
    """How a prompt ended, what it produced and which nodes ran or came from the cache."""

    prompt_id: str
    status: str  # "success" | "error" | "interrupted" | "invalid"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    validation: ValidationOutcome | None = None
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _merge_ui(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            merged.setdefault(key, [])
            merged[key].extend(value if isinstance(value, list) else [value])
    return merged or None


def _format_inputs(values: dict[str, list[Any]]) -> dict[str, list[str]]:
    out = {}
    for name, items in values.items():
        out[name] = [v if isinstance(v, (int, float, str, bool)) or v is None else
                     f"{type(v).__name__}{tuple(v.shape) if hasattr(v, 'shape') else ''}" for v in items]
    return out


class _NodeFailed(Exception):
    def __init__(self, node_id: str, exc: BaseException, inputs: dict[str, list[Any]]) -> None:
        super().__init__(str(exc))
        self.node_id = node_id
        self.exc = exc
        self.inputs = inputs


class Executor:
    """Runs prompts against a registry; holds the output cache and per-node instances between prompts."""

    def __init__(self, registry: NodeRegistry, cache: OutputCache | None = None) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self.objects: dict[tuple[str, str], Any] = {}
        # Called when a node runs out of memory (the model manager frees models, the cache empties).
        self.oom_hooks: list[Callable[[], None]] = [self.cache.clear]

    def execute(self, prompt: Any, prompt_id: str = "", *, targets: Iterable[str] | None = None,
                extra_data: dict[str, Any] | None = None, emit: Emit | None = None,
                interrupt: Interrupt | None = None, validated: ValidationOutcome | None = None) -> ExecutionResult:
        """Run a prompt to the end (in this thread unless an event loop already runs here)."""
        return run_coroutine(self.execute_async(prompt, prompt_id, targets=targets, extra_data=extra_data,
                                                emit=emit, interrupt=interrupt, validated=validated))

    async def execute_async(self, prompt: Any, prompt_id: str = "", *, targets: Iterable[str] | None = None,
                            extra_data: dict[str, Any] | None = None, emit: Emit | None = None,
                            interrupt: Interrupt | None = None,
                            validated: ValidationOutcome | None = None) -> ExecutionResult:
        """As `execute`; `validated` is the outcome of validating this same prompt (skips doing it again)."""
        run = _Run(self, prompt, prompt_id, targets, extra_data or {}, emit, interrupt or Interrupt())
        return await run.execute(validated)


class _Run:
    """The state of one prompt's execution."""

    def __init__(self, executor: Executor, prompt: Any, prompt_id: str, targets: Iterable[str] | None,
                 extra_data: dict[str, Any], emit: Emit | None, interrupt: Interrupt) -> None:
        self.executor = executor
        self.registry = executor.registry
        self.cache = executor.cache
        self.raw_prompt = prompt
        self.prompt_id = prompt_id
        self.targets = list(targets) if targets is not None else None
        self.extra_data = extra_data
        self.interrupt = interrupt
        self.result = ExecutionResult(prompt_id, "success")
        self._emit = emit
        self.nodes: dict[str, PromptNode] = {}
        self.parent: dict[str, str] = {}
        self.display: dict[str, str] = {}
        self.results: dict[str, CacheEntry] = {}
        self.to_run: dict[str, None] = {}
        self.waiting_on: dict[str, set[str]] = {}
        self.dependents: dict[str, set[str]] = {}
        self.ready: deque[str] = deque()
        self.pending_expansion: dict[str, list[Result]] = {}
        self.async_running: dict[str, tuple[list[asyncio.Task[Any]], list[int], dict[str, list[Any]]]] = {}
        self.lazy_requested: dict[str, set[str]] = {}
        self.fingerprints: dict[str, Any] = {}
        self.keys: KeyBuilder | None = None
        self.blocker_reported = False
        self.current_node: str | None = None
        self.async_raw: dict[str, list[Any]] = {}
        self.expansion_results: dict[str, list[Result | ExecutionBlocker]] = {}

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if event in ("execution_start", "execution_cached", "execution_success", "execution_error",
                     "execution_interrupted"):
            self.result.messages.append((event, data))
        if self._emit is not None:
            self._emit(event, data)

    # ---- setup -------------------------------------------------------------------------------------

    async def execute(self, validated: ValidationOutcome | None) -> ExecutionResult:
        started = time.perf_counter()
        outcome = validated or validate_prompt(self.raw_prompt, self.registry, self.targets)
        self.result.validation = outcome
        if not outcome.ok:
            self.result.status = "invalid"
            self.result.error = outcome.response()
            return self.result
        self.nodes = outcome.nodes
        self.keys = KeyBuilder(self.registry, self.nodes, self.fingerprint)
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        try:
            needed = upstream_closure(self.nodes, outcome.outputs)
            keys = {node_id: self.keys.key(node_id) for node_id in self.nodes if node_id in needed}
            self.cache.begin_prompt(keys.values())
            self.forget_instances()
            for out in outcome.outputs:
                self.require(out)
            # Report every node of the prompt whose result is cached, also those upstream of a cached
            # node that were never looked up: clients grey them out from this list, as in ComfyUI.
            self.result.cached = [n for n in keys if n in self.results or (n not in self.to_run and keys[n] in self.cache)]
            self.emit("execution_cached", {"nodes": self.result.cached, "prompt_id": self.prompt_id,
                                           "timestamp": _now_ms()})
            for node_id in outcome.outputs:
                entry = self.results.get(node_id)
                if entry is not None and entry.ui:
                    self.send_executed(node_id, entry.ui)
            await self.loop()
        except _NodeFailed as failure:
            await self.cancel_async()
            self.fail(failure)
        except ExecutionInterrupted:
            await self.cancel_async()
            self.result.status = "interrupted"
            node_id = self.current_node or ""
            self.emit("execution_interrupted", {
                "prompt_id": self.prompt_id, "node_id": node_id,
                "node_type": self.nodes[node_id].class_type if node_id in self.nodes else None,
                "executed": list(self.result.executed), "timestamp": _now_ms()})
        else:
            self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        self.result.duration = time.perf_counter() - started
        return self.result

    def forget_instances(self) -> None:
        live = {(nid, n.class_type) for nid, n in self.nodes.items()}
        for key in [k for k in self.executor.objects if k not in live]:
            del self.executor.objects[key]

    def fingerprint(self, node: PromptNode) -> Any:
        if node.id not in self.fingerprints:
            node_def = self.registry[node.class_type]
            literals = {name: (None if isinstance(v, Link) else v) for name, v in node.inputs.items()}
            try:
                value = resolve(node_def.fingerprint(literals))
            except Exception:  # a failing fingerprint means "always re-run", as in ComfyUI
                value = float("nan")
            self.fingerprints[node.id] = value
        return self.fingerprints[node.id]

    def strong_links(self, node_id: str) -> list[Link]:
        node = self.nodes[node_id]
        schema = self.registry[node.class_type].schema
        requested = self.lazy_requested.get(node_id, set())
        links = []
        for name, value in node.inputs.items():
            if not isinstance(value, Link):
                continue
            spec = schema.inputs.get(name)
            if spec is not None and spec.lazy and name not in requested:
                continue
            links.append(value)
        return links

    def require(self, node_id: str) -> None:
        """Make node_id available: from the cache, or scheduled with everything it needs."""
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in self.results or current in self.to_run:
                continue
            assert self.keys is not None
            entry = self.cache.get(self.keys.key(current))
            if entry is not None:
                self.results[current] = entry
                self.release_dependents(current)
                continue
            self.to_run[current] = None
            self.waiting_on[current] = set()
            for link in self.strong_links(current):
                self.add_dependency(current, link.node)
                stack.append(link.node)
            if not self.waiting_on[current]:
                self.ready.append(current)

    def add_dependency(self, node_id: str, source: str) -> None:
        if source in self.results:
            return
        self.waiting_on.setdefault(node_id, set()).add(source)
        self.dependents.setdefault(source, set()).add(node_id)

    def release_dependents(self, source: str) -> None:
        """source has its outputs now: nodes that waited only on it become ready."""
        for dependent in sorted(self.dependents.pop(source, set())):  # same order in every process
            waiting = self.waiting_on.get(dependent)
            if waiting is None:
                continue
            waiting.discard(source)
            if (not waiting and dependent in self.to_run and dependent not in self.async_running
                    and dependent not in self.ready):
                self.ready.append(dependent)

    # ---- the loop ----------------------------------------------------------------------------------

    async def loop(self) -> None:
        while self.to_run:
            if not self.ready:
                if self.async_running:
                    await self.wait_for_async()
                    continue
                self.raise_cycle()
            node_id = self.pick()
            await self.run_node(node_id)

    def pick(self) -> str:
        """Output nodes first, so previews and results appear as early as possible."""
        for node_id in self.ready:
            if self.registry[self.nodes[node_id].class_type].schema.output_node:
                self.ready.remove(node_id)
                return node_id
        return self.ready.popleft()

    def raise_cycle(self) -> None:
        stuck = list(self.to_run)
        graph = link_graph(self.nodes, stuck)
        import networkx as nx  # noqa: PLC0415 - only on this error path

        try:
            cycle = [edge[0] for edge in nx.find_cycle(graph)]
        except nx.NetworkXNoCycle:
            cycle = stuck
        blamed = self.display.get(cycle[0], cycle[0])
        raise _NodeFailed(blamed, DependencyCycleError(f"nodes {cycle} wait on each other"), {})

    def complete(self, node_id: str, entry: CacheEntry) -> None:
        self.results[node_id] = entry
        self.to_run.pop(node_id, None)
        self.waiting_on.pop(node_id, None)
        self.result.executed.append(node_id)
        self.release_dependents(node_id)

    # ---- one node ------------------------------------------------------------------------------------

    def gather_inputs(self, node_id: str) -> tuple[dict[str, list[Any]], set[str]]:
        """Input values as lists (one element per list item) and the names of lazy inputs not yet evaluated."""
        node = self.nodes[node_id]
        schema = self.registry[node.class_type].schema
        values: dict[str, list[Any]] = {}
        unevaluated: set[str] = set()
        for name, value in node.inputs.items():
            if isinstance(value, Link) and name in schema.inputs and schema.inputs[name].raw_link:
                values[name] = [value.to_json()]  # loop-closing nodes want the link itself
            elif isinstance(value, Link):
                entry = self.results.get(value.node)
                if entry is None:
                    values[name] = [None]
                    unevaluated.add(name)
                else:
                    values[name] = entry.outputs[value.slot] if value.slot < len(entry.outputs) else [None]
            else:
                values[name] = [value]
        for name, kind in schema.hidden.items():
            values[name] = [self.hidden_value(kind, node_id)]
        return values, unevaluated

    def hidden_value(self, kind: str, node_id: str) -> Any:
        if kind == "PROMPT":
            return self.raw_prompt
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        if kind == "UNIQUE_ID":
            return node_id
        if kind == "PROMPT_ID":
            return self.prompt_id
        if kind == "DYNPROMPT":
            return DynamicPrompt(self.raw_prompt, self.nodes, self.parent, self.display)
        return None

    def instance(self, node_id: str, node_def: NodeDef) -> Any:
        key = (node_id, node_def.name)
        if key not in self.executor.objects:
            self.executor.objects[key] = node_def.create_instance()
        return self.executor.objects[key]

    def context(self, node_id: str, index: int) -> NodeContext:
        return NodeContext(self.prompt_id, node_id, self.display.get(node_id, node_id),
                           self.nodes[node_id].class_type, self.emit, self.interrupt, index, self.extra_data)

    async def run_node(self, node_id: str) -> None:
        self.current_node = node_id
        node = self.nodes[node_id]
        node_def = self.registry[node.class_type]
        schema = node_def.schema
        values, unevaluated = self.gather_inputs(node_id)
        try:
            if node_id in self.pending_expansion:
                self.finish_expansion(node_id, node_def)
                return
            blocked = self.find_blocker(values)
            if blocked is not None:
                self.complete(node_id, CacheEntry([[blocked] for _ in schema.outputs]))
                if blocked.message is not None and not self.blocker_reported:
                    self.blocker_reported = True
                    self.emit("execution_error", {
                        "prompt_id": self.prompt_id, "node_id": node_id, "node_type": node.class_type,
                        "executed": list(self.result.executed), "exception_message": blocked.message,
                        "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": {},
                        "current_outputs": [], "timestamp": _now_ms()})
                return
            instance = self.instance(node_id, node_def)
            if node_def.has_lazy_check and self.request_lazy(node_id, node_def, instance, values, unevaluated):
                return
            self.interrupt.check()
            self.emit("executing", {"node": node_id, "display_node": self.display.get(node_id, node_id),
                                    "prompt_id": self.prompt_id})
            raw = self.call_over_lists(node_id, node_def, instance, values)
        except ExecutionInterrupted:
            raise
        except _NodeFailed:
            raise
        except Exception as exc:
            raise _NodeFailed(node_id, exc, values) from exc
        if any(inspect.isawaitable(r) for r in raw):
            tasks, indices = [], []
            for index, item in enumerate(raw):
                if inspect.isawaitable(item):
                    token = set_current(self.context(node_id, index))
                    try:
                        tasks.append(asyncio.ensure_future(item))
                    finally:
                        reset_current(token)
                    indices.append(index)
            self.async_running[node_id] = (tasks, indices, values)
            self.async_raw[node_id] = raw
            return
        self.finish_call(node_id, node_def, raw, values)

    def find_blocker(self, values: dict[str, list[Any]]) -> ExecutionBlocker | None:
        for items in values.values():
            for item in items:
                if isinstance(item, ExecutionBlocker):
                    return item
        return None

    def request_lazy(self, node_id: str, node_def: NodeDef, instance: Any, values: dict[str, list[Any]],
                     unevaluated: set[str]) -> bool:
        """Ask the node which lazy inputs it needs; schedule those not yet evaluated. True if it must wait."""
        args = values if node_def.schema.input_is_list else {k: v[0] if v else None for k, v in values.items()}
        token = set_current(self.context(node_id, 0))
        try:
            needed = resolve(node_def.check_lazy(instance, args))
        finally:
            reset_current(token)
        missing = [name for name in needed if name in unevaluated]
        if not missing:
            return False
        node = self.nodes[node_id]
        requested = self.lazy_requested.setdefault(node_id, set())
        for name in missing:
            if name in requested:
                raise RuntimeError(f"input '{name}' was requested again after it was evaluated")
            requested.add(name)
            source = node.inputs[name].node
            self.add_dependency(node_id, source)
            self.require(source)
        if not self.waiting_on.get(node_id) and node_id not in self.ready:
            self.ready.appendleft(node_id)
        return True

    def call_over_lists(self, node_id: str, node_def: NodeDef, instance: Any,
                        values: dict[str, list[Any]]) -> list[Any]:
        """ComfyUI's list mapping: one call with whole lists, or one call per item (shorter lists repeat their last)."""
        if node_def.schema.input_is_list:
            calls = [dict(values)]
        else:
            count = max((len(v) for v in values.values()), default=1)
            count = max(count, 1) if all(values.values()) else 0
            calls = [{k: v[min(i, len(v) - 1)] for k, v in values.items()} for i in range(count)]
        results = []
        for index, kwargs in enumerate(calls):
            self.interrupt.check()
            token = set_current(self.context(node_id, index))
            try:
                results.append(node_def.call(instance, kwargs))
            finally:
                reset_current(token)
        return results

    async def wait_for_async(self) -> None:
        tasks = [t for running in self.async_running.values() for t in running[0]]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for node_id in [n for n, (ts, _, _) in self.async_running.items() if all(t.done() for t in ts)]:
            tasks, indices, values = self.async_running.pop(node_id)
            raw = self.async_raw.pop(node_id)
            for task, index in zip(tasks, indices):
                exc = task.exception()
                if isinstance(exc, ExecutionInterrupted):
                    raise exc
                if exc is not None:
                    raise _NodeFailed(node_id, exc, values) from exc
                raw[index] = task.result()
            self.current_node = node_id
            self.finish_call(node_id, self.registry[self.nodes[node_id].class_type], raw, values)

    async def cancel_async(self) -> None:
        tasks = [t for running in self.async_running.values() for t in running[0] if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.async_running.clear()

    def finish_call(self, node_id: str, node_def: NodeDef, raw: list[Any], values: dict[str, list[Any]]) -> None:
        try:
            results = [node_def.normalise(r) for r in raw]
        except Exception as exc:
            raise _NodeFailed(node_id, exc, values) from exc
        if any(isinstance(r, Result) and r.expand for r in results):
            self.start_expansion(node_id, results, values)
            return
        self.store(node_id, node_def, results)

    def store(self, node_id: str, node_def: NodeDef, results: list[Result | ExecutionBlocker]) -> None:
        outputs = node_def.schema.outputs
        slots: list[list[Any]] = [[] for _ in outputs]
        ui_parts = []
        for result in results:
            if isinstance(result, ExecutionBlocker):
                for slot in slots:
                    slot.append(result)
                continue
            if result.ui:
                ui_parts.append(result.ui)
            for i, slot in enumerate(slots):
                value = result.outputs[i] if i < len(result.outputs) else None
                if outputs[i].is_list and isinstance(value, (list, tuple)):
                    slot.extend(value)
                else:
                    slot.append(value)
        ui = _merge_ui(ui_parts)
        entry = CacheEntry(slots, ui)
        assert self.keys is not None
        self.cache.put(self.keys.key(node_id), entry)
        self.complete(node_id, entry)
        if ui is not None:
            self.send_executed(node_id, ui)

    def send_executed(self, node_id: str, ui: dict[str, Any]) -> None:
        real = self.parent.get(node_id)
        self.result.outputs[node_id] = ui
        self.emit("executed", {"node": node_id, "display_node": self.display.get(node_id, node_id),
                               "output": ui, "prompt_id": self.prompt_id,
                               **({"parent_node": real} if real else {})})

    # ---- expansion -----------------------------------------------------------------------------------

    def start_expansion(self, node_id: str, results: list[Result | ExecutionBlocker],
                        values: dict[str, list[Any]]) -> None:
        """Add the sub-graph a node returned; the node finishes once the sub-graph's linked outputs exist."""
        new_ids: list[str] = []
        for result in results:
            if not isinstance(result, Result) or not result.expand:
                continue
            for child_id, raw in result.expand.items():
                child_id = str(child_id)
                if child_id in self.nodes:
                    raise _NodeFailed(node_id, ExpansionError(f"expanded node id {child_id!r} already exists"), values)
                if not isinstance(raw, dict) or raw.get("class_type") not in self.registry:
                    kind = raw.get("class_type") if isinstance(raw, dict) else raw
                    raise _NodeFailed(node_id, ExpansionError(
                        f"expanded node {child_id!r} has unknown class_type {kind!r}"), values)
                inputs = {str(k): parse_input(v) for k, v in (raw.get("inputs") or {}).items()}
                self.nodes[child_id] = PromptNode(child_id, raw["class_type"], inputs)
                self.parent[child_id] = node_id
                self.display[child_id] = raw.get("override_display_id") or self.display.get(node_id, node_id)
                new_ids.append(child_id)
        self.pending_expansion[node_id] = [r for r in results if isinstance(r, Result)]
        self.expansion_results[node_id] = results
        for child_id in new_ids:
            if self.registry[self.nodes[child_id].class_type].schema.output_node:
                self.require(child_id)
        linked = {v.node for r in results if isinstance(r, Result) for v in map(_as_link, r.outputs) if v}
        for child in linked:
            self.add_dependency(node_id, child)
            self.require(child)
        if not self.waiting_on.get(node_id):
            self.ready.append(node_id)

    def finish_expansion(self, node_id: str, node_def: NodeDef) -> None:
        del self.pending_expansion[node_id]
        results = self.expansion_results.pop(node_id)
        resolved: list[Result | ExecutionBlocker] = []
        for result in results:
            if not isinstance(result, Result):
                resolved.append(result)
                continue
            outputs = []
            for i, value in enumerate(result.outputs):
                link = _as_link(value)
                if link is None:
                    outputs.append(value)
                    continue
                items = self.results[link.node].outputs[link.slot]
                is_list = i < len(node_def.schema.outputs) and node_def.schema.outputs[i].is_list
                outputs.append(items if is_list or len(items) != 1 else items[0])
            resolved.append(Result(tuple(outputs), result.ui))
        self.store(node_id, node_def, resolved)

    # ---- failure -------------------------------------------------------------------------------------

    def fail(self, failure: _NodeFailed) -> None:
        exc = failure.exc
        node_id = failure.node_id
        node = self.nodes.get(node_id)
        class_type = node.class_type if node else None
        message = str(exc) or type(exc).__name__
        out_of_memory = type(exc).__name__ in ("OutOfMemoryError", "MemoryError") or "out of memory" in message.lower()
        if out_of_memory:
            for hook in self.executor.oom_hooks:
                hook()
            message += ("\nThis node ran out of memory. diffloom freed its models and caches; try a smaller "
                        "image or batch, or fewer models at once.")
        plugin = None
        if class_type is not None:
            module = self.registry[class_type].schema.python_module
            if module.startswith("custom_nodes"):
                plugin = module.split(".", 1)[1] if "." in module else module
        self.result.status = "error"
        data = {
            "prompt_id": self.prompt_id, "node_id": node_id, "node_type": class_type,
            "display_node": self.display.get(node_id, node_id),
            "executed": list(self.result.executed), "exception_message": message,
            "exception_type": f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins."),
            "traceback": traceback.format_exception(exc), "current_inputs": _format_inputs(failure.inputs),
            "current_outputs": list(self.results), "timestamp": _now_ms(),
        }
        if plugin:
            data["plugin"] = plugin
            data["exception_message"] = f"[plugin {plugin}] {message}"
        self.result.error = data
        self.emit("execution_error", data)


def _as_link(value: Any) -> Link | None:
    parsed = parse_input(value) if isinstance(value, list) else value
    return parsed if isinstance(parsed, Link) else None

