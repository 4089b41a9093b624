"""Convert ComfyUI's editor ("UI", litegraph) workflow format, versions 0.4 and 1, to the API ("prompt") format.

The editor resolves its graph into an API prompt in the browser; ComfyUI has no server-side
equivalent. This module does the same on the server from the workflow JSON and the `/object_info`
schemas (V1 shape): widget values are mapped to input names, Reroutes and native reroutes are
followed, PrimitiveNodes become literals, Notes are ignored, muted nodes are dropped (their
consumers lose the input), bypassed nodes are replaced by their first input of a matching type,
and subgraphs are flattened to colon ids (`"<instance id>:<inner id>"`).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

VIRTUAL_NODE_TYPES: frozenset[str] = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
"""Editor-only node types that never reach the API prompt."""

WIDGET_TYPES: frozenset[str] = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES: frozenset[str] = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
"""Values of the editor's control_after_generate widget; very old files store a boolean instead."""
UPLOAD_VALUES: frozenset[str] = frozenset({"image", "upload", "video", "audio", "file"})
"""Values the editor's upload button widget has stored in widgets_values."""
SEED_INPUT_NAMES: frozenset[str] = frozenset({"seed", "noise_seed"})
"""INT inputs that old editors gave a control widget even without control_after_generate."""

MAX_EXPANDED_NODES = 50_000
"""Nested subgraph instances multiply; a file that expands beyond this is refused rather than converted."""

MODE_NEVER = 2
MODE_BYPASS = 4
SUBGRAPH_INPUT_NODE_ID = "-10"
SUBGRAPH_OUTPUT_NODE_ID = "-20"
INTERNAL_ERROR_PREFIX = "internal error while converting"

# Costs of the widget-value alignment (see _align_widget_values); only their order matters.
_COST_DROP_VALUE = 4.0
_COST_MISSING_WIDGET = 3.0
_COST_INCOMPATIBLE = 6.0
_COST_MISSING_DECLARED_CONTROL = 1.0
_COST_NULL_WIDGET = 1.0
_COST_FORCED_WIDGET = 0.5
_COST_STALE_COMBO = 0.5
_COST_CONTROL_FILTER = 0.2


@dataclass(frozen=True)
class ConversionProblem:
    """One reason a workflow cannot be converted: the node it concerns (if any) and what is wrong."""

    node_id: str | None
    node_type: str | None
    message: str

    def __str__(self) -> str:
        if self.node_id is None:
            return self.message
        return f"{self.node_type or '?'} {self.node_id}: {self.message}"


class WorkflowConversionError(ValueError):
    """A UI workflow that cannot be converted; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[ConversionProblem]) -> None:
        self.problems: list[ConversionProblem] = list(problems)
        shown = "; ".join(str(p) for p in self.problems[:10])
        more = f" (and {len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
        super().__init__(f"cannot convert UI workflow to API format: {shown}{more}")


class _Fail(Exception):
    """Internal: one problem that aborts the current step; collected into a WorkflowConversionError."""

    def __init__(self, problem: ConversionProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# ---------------------------------------------------------------------------------------------
# Parsed graph


@dataclass(frozen=True)
class _Link:
    id: str
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


@dataclass(eq=False)
class _Node:
    key: str  # execution id: the node's id, prefixed by the subgraph instance ids that contain it
    local_id: str
    type: str
    mode: int
    title: str | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    widgets_values: Any
    scope: _Scope
    inner: _Scope | None = None  # set when the node is a subgraph instance


@dataclass(eq=False)
class _Scope:
    """The root graph or one instance of a subgraph definition."""

    prefix: str  # "" for the root, "<instance key>:" inside an instance
    nodes: dict[str, _Node] = field(default_factory=dict)
    links: dict[str, _Link] = field(default_factory=dict)
    instance: _Node | None = None


@dataclass(frozen=True)
class _Origin:
    key: str
    slot: int


@dataclass(frozen=True)
class _Literal:
    value: Any


class _Dropped:
    """Resolution ended at a muted node: the consumer loses the input entirely."""


_DROPPED = _Dropped()
_Resolved = _Origin | _Literal | _Dropped | None


def _id_str(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value:
        return value
    return None


def _slot_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _parse_link(raw: Any, where: str) -> _Link:
    """Read a link in either format: 0.4 array `[id, origin, slot, target, slot, type]` or version-1 object."""
    if isinstance(raw, Mapping):
        fields = [raw.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
        link_type = raw.get("type")
    elif isinstance(raw, (list, tuple)) and len(raw) >= 5:
        fields = list(raw[:5])
        link_type = raw[5] if len(raw) > 5 else None
    else:
        raise _Fail(ConversionProblem(None, None, f"{where}: link {raw!r} is neither "
                                      "[id, origin_id, origin_slot, target_id, target_slot, type] nor a link object"))
    link_id, origin_id, target_id = _id_str(fields[0]), _id_str(fields[1]), _id_str(fields[3])
    origin_slot, target_slot = _slot_int(fields[2]), _slot_int(fields[4])
    if link_id is None or origin_id is None or target_id is None or origin_slot is None or target_slot is None:
        raise _Fail(ConversionProblem(None, None, f"{where}: link {raw!r} has a missing or non-integer id or slot"))
    return _Link(link_id, origin_id, origin_slot, target_id, target_slot, link_type)


def _slot_list(raw: Any, what: str, node_id: str, node_type: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(s, Mapping) for s in raw):
        raise _Fail(ConversionProblem(node_id, node_type, f"'{what}' must be a list of slot objects, got {raw!r}"))
    return [dict(s) for s in raw]


class _Parser:
    """Builds the scopes of a UI workflow, expanding subgraph instances."""

    def __init__(self, workflow: Mapping[str, Any], problems: list[ConversionProblem]) -> None:
        self.problems = problems
        self.expanded = 0
        self.subgraphs: dict[str, Mapping[str, Any]] = {}
        self._collect_definitions(workflow, depth=0)
        extra = workflow.get("extra")
        groups = extra.get("groupNodes") if isinstance(extra, Mapping) else None
        names = [n for n in groups if isinstance(n, str)] if isinstance(groups, Mapping) else []
        # Group node types are the group's name behind "workflow>" (older editors: "workflow/").
        self.group_nodes: frozenset[str] = frozenset(f"workflow{sep}{n}" for n in names for sep in (">", "/"))

    def _collect_definitions(self, graph: Mapping[str, Any], depth: int) -> None:
        definitions = graph.get("definitions")
        if definitions is None or depth > 64:
            return
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
        if subgraphs is None:
            return
        if not isinstance(subgraphs, list):
            self.problems.append(ConversionProblem(None, None, "'definitions.subgraphs' must be a list"))
            return
        for sg in subgraphs:
            sg_id = sg.get("id") if isinstance(sg, Mapping) else None
            if not isinstance(sg_id, str) or not sg_id:
                self.problems.append(ConversionProblem(None, None, f"subgraph definition without a string 'id': "
                                                       f"{str(sg)[:80]}"))
                continue
            self.subgraphs.setdefault(sg_id, sg)
            self._collect_definitions(sg, depth + 1)

    def scope(self, graph: Mapping[str, Any], prefix: str, instance: _Node | None,
              active: tuple[str, ...]) -> _Scope:
        """Parse one graph's nodes and links; `active` holds the subgraph ids being expanded (cycle guard)."""
        scope = _Scope(prefix=prefix, instance=instance)
        where = f"subgraph {active[-1]!r}" if active else "workflow"
        raw_links = graph.get("links")
        if raw_links is None:
            raw_links = []
        if not isinstance(raw_links, list):
            self.problems.append(ConversionProblem(None, None, f"{where}: 'links' must be a list"))
            raw_links = []
        for raw in raw_links:
            if raw is None:  # editors have written null for deleted links
                continue
            try:
                link = _parse_link(raw, where)
            except _Fail as fail:
                self.problems.append(fail.problem)
                continue
            scope.links[link.id] = link
        raw_nodes = graph.get("nodes")
        if not isinstance(raw_nodes, list):
            self.problems.append(ConversionProblem(None, None, f"{where}: 'nodes' must be a list"))
            return scope
        self.expanded += len(raw_nodes)
        if self.expanded > MAX_EXPANDED_NODES:
            if self.expanded - len(raw_nodes) <= MAX_EXPANDED_NODES:  # report once
                self.problems.append(ConversionProblem(None, None, f"{where}: more than {MAX_EXPANDED_NODES} nodes "
                                                       "after expanding subgraphs"))
            return scope
        for raw in raw_nodes:
            try:
                node = self._node(raw, scope, where)
            except _Fail as fail:
                self.problems.append(fail.problem)
                continue
            if node.local_id in scope.nodes:
                self.problems.append(ConversionProblem(node.key, node.type, f"{where}: duplicate node id"))
                continue
            scope.nodes[node.local_id] = node
        for node in scope.nodes.values():
            if node.type in self.subgraphs:
                if node.type in active:
                    self.problems.append(ConversionProblem(node.key, node.type, "subgraph contains itself"))
                    continue
                node.inner = self.scope(self.subgraphs[node.type], node.key + ":", node, active + (node.type,))
        return scope

    def _node(self, raw: Any, scope: _Scope, where: str) -> _Node:
        if not isinstance(raw, Mapping):
            raise _Fail(ConversionProblem(None, None, f"{where}: node {str(raw)[:80]} is not an object"))
        local_id = _id_str(raw.get("id"))
        node_type = raw.get("type")
        if local_id is None:
            raise _Fail(ConversionProblem(None, node_type if isinstance(node_type, str) else None,
                                          f"{where}: node has no valid 'id' ({raw.get('id')!r})"))
        key = scope.prefix + local_id
        if not isinstance(node_type, str) or not node_type:
            raise _Fail(ConversionProblem(key, None, f"node has no 'type' string ({node_type!r})"))
        mode = raw.get("mode", 0)
        mode = mode if isinstance(mode, int) and not isinstance(mode, bool) else 0
        title = raw.get("title")
        return _Node(key=key, local_id=local_id, type=node_type, mode=mode,
                     title=title if isinstance(title, str) else None,
                     inputs=_slot_list(raw.get("inputs"), "inputs", key, node_type),
                     outputs=_slot_list(raw.get("outputs"), "outputs", key, node_type),
                     widgets_values=raw.get("widgets_values"), scope=scope)


# ---------------------------------------------------------------------------------------------
# Link resolution


def _types_match(a: Any, b: Any) -> bool:
    """Litegraph's connection rule: equal, a wildcard, or comma-separated type lists that intersect."""
    if a in ("*", "", 0, None) or b in ("*", "", 0, None):
        return True
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return bool({t.strip().lower() for t in a.split(",")} & {t.strip().lower() for t in b.split(",")})


def _bypass_input_index(node: _Node, slot: int, want: Any) -> int:
    """Which input a bypassed node passes to output `slot`: same index if it fits, else first exact, else first fit."""
    inputs = node.inputs
    if want in ("*", "", 0, None):
        return slot if slot < len(inputs) else (0 if inputs else -1)
    out_type = node.outputs[slot].get("type") if slot < len(node.outputs) else want
    if slot < len(inputs) and _types_match(inputs[slot].get("type"), out_type) \
            and _types_match(inputs[slot].get("type"), want):
        return slot
    for i, inp in enumerate(inputs):
        if inp.get("type") == want:
            return i
    for i, inp in enumerate(inputs):
        if _types_match(inp.get("type"), out_type) and _types_match(inp.get("type"), want):
            return i
    return -1


def _input_name(inp: Mapping[str, Any]) -> str | None:
    name = inp.get("name")
    if isinstance(name, str) and name:
        return name
    widget = inp.get("widget")
    name = widget.get("name") if isinstance(widget, Mapping) else None
    return name if isinstance(name, str) and name else None


def _primitive_value(node: _Node) -> _Resolved:
    values = node.widgets_values
    if isinstance(values, list) and values:
        return _Literal(values[0])
    if isinstance(values, Mapping) and values:
        return _Literal(values.get("value", next(iter(values.values()))))
    return None


def _promoted_value(instance: _Node, slot: int) -> _Resolved:
    """The value of an unlinked subgraph-instance input that the editor shows as a widget, if stored."""
    inp = instance.inputs[slot]
    if not isinstance(inp.get("widget"), Mapping):
        return None
    values = instance.widgets_values
    if isinstance(values, Mapping):
        name = _input_name(inp)
        return _Literal(values[name]) if name in values else None
    if not isinstance(values, list):
        return None
    promoted = [i for i, x in enumerate(instance.inputs) if isinstance(x.get("widget"), Mapping)]
    # Older editors kept a slot for each control_after_generate companion; skip those when present.
    spare = len(values) - len(promoted)
    index = 0
    for i in promoted:
        if index >= len(values):
            return None
        if i == slot:
            return None if values[index] is None else _Literal(values[index])
        index += 1
        if spare > 0 and index < len(values) and _is_control_value(values[index]):
            index += 1
            spare -= 1
    return None


class _Resolver:
    """Follows a consumer's input through reroutes, primitives, bypassed nodes and subgraph boundaries."""

    def __init__(self, virtual_types: frozenset[str]) -> None:
        self.virtual_types = virtual_types

    def resolve_input(self, node: _Node, index: int) -> _Resolved:
        """Walk from input `index` of `node` to the output that feeds it (iteratively: chains can be long)."""
        consumer = node
        visited: set[tuple[int, str, int]] = set()
        state: tuple[str, _Node, int, Any] = ("in", node, index, None)
        while True:
            direction, current, slot, want = state
            mark = (id(current), direction, slot)
            if mark in visited:
                raise _Fail(ConversionProblem(consumer.key, consumer.type, f"input {self._name(consumer, index)!r} "
                                              f"leads into a cycle at node {current.key} ({current.type})"))
            visited.add(mark)
            step = self._step_in(consumer, index, current, slot, want) if direction == "in" \
                else self._step_out(current, slot, want)
            if isinstance(step, tuple):
                state = step
            else:
                return step

    @staticmethod
    def _name(node: _Node, index: int) -> str:
        return _input_name(node.inputs[index]) or f"#{index}"

    def _step_in(self, consumer: _Node, consumer_index: int, node: _Node, index: int,
                 want: Any) -> tuple[str, _Node, int, Any] | _Resolved:
        if index >= len(node.inputs):
            return None
        inp = node.inputs[index]
        link_id = _id_str(inp.get("link"))
        if link_id is None:
            return None
        want = want if want is not None else inp.get("type")
        scope = node.scope
        link = scope.links.get(link_id)
        what = f"input {self._name(consumer, consumer_index)!r}"
        if node is not consumer:
            what += f" (through {node.type} {node.key})"
        if link is None:
            raise _Fail(ConversionProblem(consumer.key, consumer.type,
                                          f"{what} refers to link {link_id}, which is not in the workflow's links"))
        if link.origin_slot < 0:
            raise _Fail(ConversionProblem(consumer.key, consumer.type, f"{what} is linked (link {link.id}) to "
                                          f"output slot {link.origin_slot}, which is negative"))
        if link.origin_id == SUBGRAPH_INPUT_NODE_ID and scope.instance is not None:
            instance = scope.instance
            if link.origin_slot >= len(instance.inputs):
                raise _Fail(ConversionProblem(consumer.key, consumer.type, f"{what} comes from subgraph input "
                                              f"#{link.origin_slot}, which instance {instance.key} does not have"))
            if _id_str(instance.inputs[link.origin_slot].get("link")) is None:
                return _promoted_value(instance, link.origin_slot)
            return ("in", instance, link.origin_slot, None)
        origin = scope.nodes.get(link.origin_id)
        if origin is None:
            raise _Fail(ConversionProblem(consumer.key, consumer.type, f"{what} is linked (link {link.id}) "
                                          f"to node {scope.prefix}{link.origin_id}, which does not exist"))
        return ("out", origin, link.origin_slot, want)

    def _step_out(self, node: _Node, slot: int, want: Any) -> tuple[str, _Node, int, Any] | _Resolved:
        if node.mode == MODE_BYPASS and node.type not in self.virtual_types:
            index = _bypass_input_index(node, slot, want)
            return None if index < 0 else ("in", node, index, None)
        if node.type == "PrimitiveNode":
            return _primitive_value(node)
        if node.type in self.virtual_types:  # Reroute and the like pass input `slot` through
            return ("in", node, slot, want) if slot < len(node.inputs) else None
        if node.mode == MODE_NEVER:
            return _DROPPED
        if node.inner is not None:
            return self._step_out_of_subgraph(node, slot, want)
        return _Origin(node.key, slot)

    @staticmethod
    def _step_out_of_subgraph(instance: _Node, slot: int, want: Any) -> tuple[str, _Node, int, Any] | _Resolved:
        inner = instance.inner
        assert inner is not None
        feeding = sorted((lk for lk in inner.links.values()
                          if lk.target_id == SUBGRAPH_OUTPUT_NODE_ID and lk.target_slot == slot),
                         key=lambda lk: _slot_int(lk.id) or 0)
        if not feeding:
            return None
        link = feeding[0]
        if link.origin_slot < 0:
            raise _Fail(ConversionProblem(instance.key, instance.type, f"subgraph output #{slot} is linked to "
                                          f"output slot {link.origin_slot}, which is negative"))
        if link.origin_id == SUBGRAPH_INPUT_NODE_ID:  # an input wired straight to an output
            if link.origin_slot >= len(instance.inputs):
                return None
            if _id_str(instance.inputs[link.origin_slot].get("link")) is None:
                return _promoted_value(instance, link.origin_slot)
            return ("in", instance, link.origin_slot, None)
        origin = inner.nodes.get(link.origin_id)
        if origin is None:
            raise _Fail(ConversionProblem(instance.key, instance.type, f"subgraph output #{slot} is linked to inner "
                                          f"node {link.origin_id}, which does not exist"))
        return ("out", origin, link.origin_slot, want)


# ---------------------------------------------------------------------------------------------
# Widget values


@dataclass(frozen=True)
class _Widget:
    name: str
    type: str  # one of WIDGET_TYPES
    config: Mapping[str, Any]
    options: tuple[Any, ...]  # combo choices; empty for other types
    force_input: bool
    control: str  # "declared", "legacy" (an old editor's seed widget) or ""


@dataclass(frozen=True)
class _Slot:
    kind: str  # "widget", "control" or "upload"
    widget: _Widget | None = None
    declared: bool = False
    combo: bool = False


def _ordered_inputs(schema: Mapping[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, spec, optional) of the required then optional inputs, in `input_order` when given."""
    declared = schema.get("input")
    declared = declared if isinstance(declared, Mapping) else {}
    order = schema.get("input_order")
    order = order if isinstance(order, Mapping) else {}
    result: list[tuple[str, Any, bool]] = []
    for section, optional in (("required", False), ("optional", True)):
        specs = declared.get(section)
        if not isinstance(specs, Mapping):
            continue
        listed = order.get(section)
        names = [n for n in listed if isinstance(n, str) and n in specs] if isinstance(listed, list) else []
        names += [n for n in specs if isinstance(n, str) and n not in names]
        result += [(n, specs[n], optional) for n in names]
    return result


def _widget_of(name: str, spec: Any) -> _Widget | None:
    if isinstance(spec, (list, tuple)) and spec:
        kind, config = spec[0], spec[1] if len(spec) > 1 else {}
    else:
        return None
    config = config if isinstance(config, Mapping) else {}
    if isinstance(kind, (list, tuple)):
        kind, options = "COMBO", tuple(kind)
    elif kind == "COMBO":
        raw = config.get("options")
        options = tuple(raw) if isinstance(raw, (list, tuple)) else ()
    elif isinstance(kind, str) and kind in WIDGET_TYPES:
        options = ()
    else:
        return None
    control = "declared" if config.get("control_after_generate") else \
        ("legacy" if kind == "INT" and name in SEED_INPUT_NAMES else "")
    return _Widget(name, kind, config, options, bool(config.get("forceInput")), control)


def _has_upload(widget: _Widget) -> bool:
    return any(isinstance(key, str) and key.endswith("_upload") and bool(value)
               for key, value in widget.config.items())


def _widget_slots(schema: Mapping[str, Any]) -> list[_Slot]:
    """The sequence editors write to widgets_values; control and upload values are optional slots."""
    widgets = [(w, optional) for name, spec, optional in _ordered_inputs(schema)
               if (w := _widget_of(name, spec)) is not None]
    # The upload button sits right after its input in some editors and after the last required
    # widget in others (it is appended to the required inputs); either position may hold its value.
    upload_after: set[int] = {i for i, (w, _) in enumerate(widgets) if _has_upload(w)}
    if upload_after:
        upload_after.add(sum(1 for _, optional in widgets if not optional) - 1)
    slots: list[_Slot] = []
    for position, (widget, _) in enumerate(widgets):
        slots.append(_Slot("widget", widget))
        if widget.control:
            slots.append(_Slot("control", widget, declared=widget.control == "declared",
                               combo=widget.type == "COMBO"))
        if position in upload_after:
            slots.append(_Slot("upload"))
    return slots


def _is_control_value(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (_is_number(a) and _is_number(b)) or type(a) is type(b)


def _fit_cost(widget: _Widget, value: Any) -> float:
    """How badly `value` fits `widget` (0 = a value of its type)."""
    if value is None:
        return _COST_NULL_WIDGET
    base = _COST_FORCED_WIDGET if widget.force_input else 0.0
    kind = widget.type
    if kind == "INT":
        ok = isinstance(value, int) and not isinstance(value, bool) or \
            isinstance(value, float) and value.is_integer()
    elif kind == "FLOAT":
        ok = _is_number(value)
    elif kind == "BOOLEAN":
        ok = isinstance(value, bool)
    elif kind == "STRING":
        ok = isinstance(value, str)
    else:
        if any(_same_kind(value, o) and value == o for o in widget.options):
            return base
        # a model file renamed or missing on this machine is still the user's choice
        ok = isinstance(value, (str, int, float)) and (not widget.options or any(_same_kind(value, o)
                                                                                 for o in widget.options))
        return base + (_COST_STALE_COMBO if ok else _COST_INCOMPATIBLE)
    return base + (0.0 if ok else _COST_INCOMPATIBLE)


def _moves(slot: _Slot, values: Sequence[Any], j: int) -> list[tuple[float, int]]:
    """(cost, values consumed) for each way `slot` can take values from index `j`."""
    n = len(values)
    if slot.kind == "widget":
        assert slot.widget is not None
        moves = [(0.0 if slot.widget.force_input else _COST_MISSING_WIDGET, 0)]
        if j < n:
            moves.insert(0, (_fit_cost(slot.widget, values[j]), 1))
        return moves
    if slot.kind == "control":
        moves = []
        if j < n and _is_control_value(values[j]):
            moves.append((0.0, 1))
            if slot.combo and j + 1 < n and isinstance(values[j + 1], str):  # old editors' combo filter text
                moves.append((_COST_CONTROL_FILTER, 2))
        moves.append((_COST_MISSING_DECLARED_CONTROL if slot.declared else 0.0, 0))
        return moves
    moves = []
    if j < n and (values[j] is None or (isinstance(values[j], str) and values[j] in UPLOAD_VALUES)):
        moves.append((0.0, 1))
    moves.append((0.0, 0))
    return moves


def _align_widget_values(slots: Sequence[_Slot], values: Sequence[Any]) -> dict[str, Any]:
    """Assign a positional widgets_values list to widget names.

    Files differ in whether they hold a control_after_generate value, an upload-button value, a
    value for a forceInput input, or a combo filter text; a positional read breaks on any of these.
    A small dynamic programme finds the cheapest assignment instead: values must fit their widget's
    type, optional slots may be empty, and dropping values or missing widgets costs most.
    """
    values = values[:2 * len(slots) + 16]  # values past this are dropped anyway; keeps the table small
    m, n = len(slots), len(values)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(m + 1)]
    for j in range(n + 1):
        best[m][j] = _COST_DROP_VALUE * (n - j)
    for i in range(m - 1, -1, -1):
        for j in range(n, -1, -1):
            cost = min(c + best[i + 1][j + k] for c, k in _moves(slots[i], values, j))
            if j < n:
                cost = min(cost, _COST_DROP_VALUE + best[i][j + 1])
            best[i][j] = cost
    assigned: dict[str, Any] = {}
    i = j = 0
    while i < m:
        for c, k in _moves(slots[i], values, j):
            if math.isclose(c + best[i + 1][j + k], best[i][j]):
                slot = slots[i]
                if slot.kind == "widget" and k == 1 and values[j] is not None:
                    assert slot.widget is not None
                    assigned[slot.widget.name] = values[j]
                i, j = i + 1, j + k
                break
        else:  # the cheapest way on drops value j
            j += 1
    return assigned


def _default_value(widget: _Widget) -> tuple[bool, Any]:
    """What the editor's widget holds before any value is loaded: (known, value)."""
    config = widget.config
    if "default" in config:
        return True, config["default"]
    if widget.type == "COMBO":
        return (True, widget.options[0]) if widget.options else (False, None)
    if widget.type in ("INT", "FLOAT"):
        return True, config.get("min", 0) if _is_number(config.get("min", 0)) else 0
    return True, {"STRING": "", "BOOLEAN": False}[widget.type]


def _widget_inputs(node: _Node, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Widget values of `node` keyed by input name, with defaults for values the file lacks."""
    slots = _widget_slots(schema)
    values = node.widgets_values
    if isinstance(values, Mapping):
        stored = {k: v for k, v in values.items() if isinstance(k, str) and v is not None}
    elif isinstance(values, list):
        stored = _align_widget_values(slots, values)
    else:
        stored = {}
    result: dict[str, Any] = {}
    for slot in slots:
        widget = slot.widget
        if slot.kind != "widget" or widget is None or widget.force_input:
            continue
        if widget.name in stored:
            result[widget.name] = stored[widget.name]
        else:
            known, default = _default_value(widget)
            if known:
                result[widget.name] = default
    return result


def _literal(value: Any) -> Any:
    """A list literal would read as a link; the API format wraps it."""
    return {"__value__": value} if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------------
# Conversion


def _all_nodes(scope: _Scope) -> list[_Node]:
    result: list[_Node] = []
    for node in scope.nodes.values():
        result.append(node)
        if node.inner is not None and node.mode not in (MODE_NEVER, MODE_BYPASS):
            result += _all_nodes(node.inner)
    return result


def _convert_node(node: _Node, schema: Mapping[str, Any], resolver: _Resolver,
                  problems: list[ConversionProblem]) -> dict[str, Any]:
    inputs = {name: _literal(v) for name, v in _widget_inputs(node, schema).items()}
    for index, inp in enumerate(node.inputs):
        if _id_str(inp.get("link")) is None:
            continue
        name = _input_name(inp)
        if name is None:
            problems.append(ConversionProblem(node.key, node.type, f"linked input #{index} has no name"))
            continue
        try:
            resolved = resolver.resolve_input(node, index)
        except _Fail as fail:
            problems.append(fail.problem)
            continue
        if resolved is None:
            continue  # nothing usable upstream: a widget keeps its own value
        if isinstance(resolved, _Dropped):
            inputs.pop(name, None)
        elif isinstance(resolved, _Literal):
            inputs[name] = _literal(resolved.value)
        else:
            inputs[name] = [resolved.key, resolved.slot]
    display = schema.get("display_name")
    title = node.title or (display if isinstance(display, str) and display else node.type)
    return {"class_type": node.type, "inputs": inputs, "_meta": {"title": title}}


def _convert(workflow: Any, node_info: Mapping[str, Any], virtual_types: frozenset[str]) -> dict[str, Any]:
    if not isinstance(workflow, Mapping):
        raise WorkflowConversionError([ConversionProblem(None, None, f"a UI workflow must be a JSON object, "
                                                         f"got {type(workflow).__name__}")])
    problems: list[ConversionProblem] = []
    parser = _Parser(workflow, problems)
    root = parser.scope(workflow, "", None, ())
    resolver = _Resolver(virtual_types)
    prompt: dict[str, Any] = {}
    for node in _all_nodes(root):
        if node.type in virtual_types or node.inner is not None or node.mode in (MODE_NEVER, MODE_BYPASS):
            continue
        if node.type in parser.subgraphs:
            continue  # an instance that could not be expanded; the problem is already recorded
        schema = node_info.get(node.type) if isinstance(node.type, str) else None
        if not isinstance(schema, Mapping):
            if node.type in parser.group_nodes:
                message = (f"legacy group node {node.type!r} is not supported: ungroup it or convert it to "
                           "a subgraph in the editor")
            else:
                message = f"unknown node type {node.type!r}: not in /object_info and not a virtual or subgraph node"
            problems.append(ConversionProblem(node.key, node.type, message))
            continue
        prompt[node.key] = _convert_node(node, schema, resolver, problems)
    if problems:
        raise WorkflowConversionError(problems)
    return prompt


def convert_ui_to_api(workflow: dict[str, Any], node_info: Mapping[str, dict[str, Any]], *,
                      virtual_types: Collection[str] = ()) -> dict[str, Any]:
    """Convert a UI workflow (version 0.4 or 1) to an API prompt, or raise WorkflowConversionError.

    `node_info` is the `/object_info` mapping in ComfyUI's V1 shape. `virtual_types` names further
    editor-only node types (from editor extensions) that pass input k to output k like a Reroute.
    """
    virtual = VIRTUAL_NODE_TYPES | frozenset(virtual_types)
    try:
        return _convert(workflow, node_info, virtual)
    except WorkflowConversionError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        # A shape this module did not foresee must still reach the caller as a conversion error.
        raise WorkflowConversionError([ConversionProblem(None, None, f"{INTERNAL_ERROR_PREFIX}: "
                                                         f"{type(exc).__name__}: {exc}")]) from exc


def is_ui_workflow(data: Any) -> bool:
    """True for the editor's workflow format (a `nodes` list), False for API prompts and anything else."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def is_api_prompt(data: Any) -> bool:
    """True for an API-format prompt: an object whose values are all node objects."""
    return isinstance(data, Mapping) and not is_ui_workflow(data) and all(isinstance(v, Mapping)
                                                                         for v in data.values())


def to_api(data: Any, node_info: Mapping[str, dict[str, Any]], *,
           virtual_types: Collection[str] = ()) -> dict[str, Any]:
    """Return an API prompt: API-format input unchanged (the same object), UI workflows converted."""
    if is_ui_workflow(data):
        return convert_ui_to_api(data, node_info, virtual_types=virtual_types)
    if is_api_prompt(data):
        return data
    raise WorkflowConversionError([ConversionProblem(None, None, "neither a UI workflow (an object with a 'nodes' "
                                                     "list) nor an API prompt (an object of node objects)")])
