"""Validate an API-format prompt before anything runs, collecting every error in ComfyUI's shape.

Each error names the node id, its class_type, the input, the value and the rule, e.g.
`KSampler 3: input 'steps' is 0, must be >= 1`. Outputs whose sub-graph has errors are dropped;
if none remain the prompt is refused (HTTP 400 with `error` and `node_errors`).
"""
from __future__ import annotations

import heapq
import math
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from .aio import resolve
from .nodedef import NodeDef
from .registry import NodeRegistry
from .schema import WIDGET_TYPES, InputSpec, types_match
from .workflow import Link, PromptNode, node_title, parse_input

# A cycle's message names this many of its members; a node lists at most this many outputs it spoils.
MAX_LISTED = 20
MAX_DEPENDENT_OUTPUTS = 100

# ComfyUI's short messages per error type; our `details` carries the full sentence.
MESSAGES = {
    "required_input_missing": "Required input is missing",
    "bad_linked_input": "Bad linked input, must be a length-2 list of [string, int]",
    "return_type_mismatch": "Return type mismatch between linked nodes",
    "invalid_input_type": "Failed to convert an input value",
    "value_smaller_than_min": "Value smaller than min",
    "value_bigger_than_max": "Value bigger than max",
    "value_not_in_list": "Value not in list",
    "custom_validation_failed": "Custom validation failed for node",
    "exception_during_validation": "Exception when validating node",
    "dependency_cycle": "Dependency cycle detected",
    "invalid_prompt": "Cannot execute because a node is invalid",
}


@dataclass
class NodeError:
    """One problem with one node."""

    type: str
    details: str
    extra_info: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message or MESSAGES.get(self.type, self.type),
                "details": self.details, "extra_info": self.extra_info}


@dataclass
class ValidationOutcome:
    """The verdict on a prompt: the normalised nodes, the outputs to run, and every error found."""

    nodes: dict[str, PromptNode]
    outputs: list[str]
    node_errors: dict[str, list[NodeError]]
    error: dict[str, Any] | None = None
    dependent_outputs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def node_errors_json(self) -> dict[str, Any]:
        return {node_id: {"errors": [e.to_json() for e in errs],
                          "dependent_outputs": self.dependent_outputs.get(node_id, []),
                          "class_type": self.nodes[node_id].class_type if node_id in self.nodes else None}
                for node_id, errs in self.node_errors.items()}

    def response(self) -> dict[str, Any]:
        """The body ComfyUI sends with HTTP 400 (or the `node_errors` of an accepted prompt)."""
        return {"error": self.error, "node_errors": self.node_errors_json()}

    def messages(self) -> list[str]:
        """Every error as one readable line, for the terminal."""
        return [e.details for errs in self.node_errors.values() for e in errs] or (
            [self.error["details"] or self.error["message"]] if self.error else [])


def _top_error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _label(node: PromptNode) -> str:
    return f"{node.class_type} {node.id}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Coercion(ValueError):
    pass


def coerce_literal(spec: InputSpec, value: Any) -> Any:
    """Convert a literal to the input's type as ComfyUI does, or raise _Coercion."""
    kind = spec.type
    try:
        if kind == "INT":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, float):
                if not math.isfinite(value):
                    raise _Coercion(f"{value!r} is not a finite number")
                return int(value)
            if isinstance(value, (int, str)):
                return int(value)
            raise _Coercion(f"{type(value).__name__} is not an integer")
        if kind == "FLOAT":
            if isinstance(value, (bool, int, float, str)):
                result = float(value)
                if math.isnan(result):
                    raise _Coercion("NaN is not a number")
                return result
            raise _Coercion(f"{type(value).__name__} is not a number")
        if kind == "STRING":
            if isinstance(value, (str, int, float, bool)):
                return str(value)
            raise _Coercion(f"{type(value).__name__} is not text")
        if kind == "BOOLEAN":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise _Coercion(f"{_short(value)} is not true or false")
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, _Coercion):
            raise
        raise _Coercion(str(exc)) from exc
    return value


class _Validator:
    def __init__(self, registry: NodeRegistry, nodes: dict[str, PromptNode]) -> None:
        self.registry = registry
        self.nodes = nodes
        self.errors: dict[str, list[NodeError]] = {}

    def add(self, node: PromptNode, kind: str, details: str, **extra: Any) -> None:
        self.errors.setdefault(node.id, []).append(NodeError(kind, f"{_label(node)}: {details}", extra))

    def check_node(self, node: PromptNode) -> None:
        node_def = self.registry[node.class_type]
        schema = node_def.schema
        rules = node_def.rules
        literals: dict[str, Any] = {}
        input_types: dict[str, str] = {}
        for name, spec in schema.inputs.items():
            if spec.section == "hidden":
                continue
            if name not in node.inputs:
                if spec.section == "required":
                    self.add(node, "required_input_missing", f"required input '{name}' ({spec.type}) is missing",
                             input_name=name)
                continue
            value = node.inputs[name]
            if isinstance(value, Link):
                source_type = self.check_link(node, name, value, spec, rules.checks_link_types)
                if source_type is not None:
                    input_types[name] = source_type
                literals[name] = None
                continue
            if name in rules.replaces or rules.replaces_all:
                literals[name] = value
                continue
            checked = self.check_literal(node, name, spec, value)
            literals[name] = checked
            if checked is not _INVALID:
                node.inputs[name] = checked
        for name, value in list(node.inputs.items()):
            if name in schema.inputs:
                continue
            if isinstance(value, Link):
                self.check_link(node, name, value, None, True)
            else:
                del node.inputs[name]  # ComfyUI drops undeclared literals
        if node_def.has_validate and node.id not in self.errors:
            self.custom_validate(node, node_def, {k: v for k, v in literals.items() if v is not _INVALID},
                                 input_types)

    def check_link(self, node: PromptNode, name: str, link: Link, spec: InputSpec | None,
                   skip_type: bool) -> str | None:
        source = self.nodes.get(link.node)
        if source is None:
            self.add(node, "bad_linked_input", f"input '{name}' links to node {link.node}, which is not in the prompt",
                     input_name=name, linked_node=link.to_json())
            return None
        if link.node == node.id:
            self.add(node, "bad_linked_input", f"input '{name}' links to its own node",
                     input_name=name, linked_node=link.to_json())
            return None
        if source.class_type not in self.registry:
            return None
        outputs = self.registry[source.class_type].schema.outputs
        if not 0 <= link.slot < len(outputs):
            self.add(node, "bad_linked_input",
                     f"input '{name}' links to output {link.slot} of {_label(source)}, which has "
                     f"{len(outputs)} output{'s' if len(outputs) != 1 else ''}",
                     input_name=name, linked_node=link.to_json())
            return None
        out_type = outputs[link.slot].type
        if spec is not None and not skip_type and not types_match(out_type, spec.type):
            self.add(node, "return_type_mismatch",
                     f"input '{name}' expects {spec.type} but is linked to output {link.slot} "
                     f"({out_type}) of {_label(source)}",
                     input_name=name, input_config=spec.v1(), received_type=out_type, linked_node=link.to_json())
        return out_type

    def check_literal(self, node: PromptNode, name: str, spec: InputSpec, value: Any) -> Any:
        extra = {"input_name": name, "input_config": spec.v1(), "received_value": value}
        # `widgetType` names the widget of a socket type (V3's MultiType around a FLOAT widget is "FLOAT,MASK").
        if spec.options.get("widgetType") in WIDGET_TYPES:
            spec = replace(spec, type=spec.options["widgetType"])
        if spec.type not in WIDGET_TYPES and spec.type != "*":
            self.add(node, "invalid_input_type",
                     f"input '{name}' expects a link from a {spec.type} output, got the value {_short(value)}",
                     **extra)
            return _INVALID
        if spec.type == "COMBO":
            choices = spec.choice_list()
            if not isinstance(value, str) or value not in choices:
                shown = choices if len(choices) <= 20 else choices[:20] + ["..."]
                self.add(node, "value_not_in_list",
                         f"input '{name}' is {_short(value)}, must be one of {shown}", **extra)
                return _INVALID
            return value
        try:
            value = coerce_literal(spec, value)
        except _Coercion as exc:
            self.add(node, "invalid_input_type", f"input '{name}' is {_short(value)}, must be {spec.type}: {exc}",
                     **extra)
            return _INVALID
        if spec.type in ("INT", "FLOAT"):
            lo, hi = spec.options.get("min"), spec.options.get("max")
            if lo is not None and value < lo:
                self.add(node, "value_smaller_than_min", f"input '{name}' is {value}, must be >= {lo}", **extra)
                return _INVALID
            if hi is not None and value > hi:
                self.add(node, "value_bigger_than_max", f"input '{name}' is {value}, must be <= {hi}", **extra)
                return _INVALID
        return value

    def custom_validate(self, node: PromptNode, node_def: NodeDef, literals: dict[str, Any],
                        input_types: dict[str, str]) -> None:
        try:
            verdict = resolve(node_def.validate(literals, input_types))
        except Exception as exc:  # a node's own check must not take validation down
            self.add(node, "exception_during_validation", f"its validation raised {type(exc).__name__}: {exc}",
                     exception_message=str(exc), traceback=traceback.format_exc().splitlines())
            return
        if verdict is True:
            return
        reason = "returned False" if verdict is False else str(verdict)
        self.add(node, "custom_validation_failed", f"{reason}")


_INVALID = object()


def parse_prompt(data: Any, registry: NodeRegistry) -> tuple[dict[str, PromptNode], dict[str, Any] | None,
                                                            dict[str, list[NodeError]]]:
    """Parse the API format; return the nodes, or a top-level `invalid_prompt` error with per-node reasons."""
    if not isinstance(data, Mapping) or not data:
        return {}, _top_error("no_prompt" if not data else "invalid_prompt",
                              "No prompt provided" if not data else "Invalid prompt",
                              "the prompt must be a non-empty JSON object of nodes"), {}
    nodes: dict[str, PromptNode] = {}
    errors: dict[str, list[NodeError]] = {}
    for raw_id, raw in data.items():
        node_id = str(raw_id)
        if not isinstance(raw, Mapping):
            errors[node_id] = [NodeError("invalid_prompt", f"node {node_id}: must be an object with class_type "
                                                           f"and inputs, got {type(raw).__name__}")]
            continue
        class_type = raw.get("class_type")
        inputs = raw.get("inputs", {})
        if not isinstance(class_type, str) or not class_type:
            errors[node_id] = [NodeError("invalid_prompt", f"node {node_id}: has no class_type")]
            continue
        if class_type not in registry:
            errors[node_id] = [NodeError("invalid_prompt", f"{class_type} {node_id}: node type {class_type!r} "
                                                           f"does not exist (is its plugin installed?)")]
            nodes[node_id] = PromptNode(node_id, class_type, {}, node_title(raw))
            continue
        if not isinstance(inputs, Mapping):
            errors[node_id] = [NodeError("invalid_prompt", f"{class_type} {node_id}: inputs must be an object")]
            continue
        nodes[node_id] = PromptNode(node_id, class_type, {str(k): parse_input(v) for k, v in inputs.items()},
                                    node_title(raw))
    if errors:
        first_id, first = next(iter(errors.items()))
        message = first[0].details
        return nodes, _top_error("invalid_prompt", f"Cannot execute because of invalid nodes: {message}",
                                 "\n".join(e.details for errs in errors.values() for e in errs)), errors
    return nodes, None, {}


def upstream_closure(nodes: Mapping[str, PromptNode], roots: Iterable[str]) -> set[str]:
    """The roots and every node they link to, directly or not."""
    seen: set[str] = set()
    stack = [r for r in roots if r in nodes]
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.extend(link.node for link in nodes[node_id].links().values() if link.node in nodes)
    return seen


def link_graph(nodes: Mapping[str, PromptNode], within: Iterable[str] | None = None) -> nx.DiGraph:
    """A directed graph source -> consumer of the links among `within` (default: all nodes)."""
    keep = set(nodes) if within is None else set(within)
    graph = nx.DiGraph()
    graph.add_nodes_from(keep)
    for node_id in keep:
        for link in nodes[node_id].links().values():
            if link.node in keep:
                graph.add_edge(link.node, node_id)
    return graph


def validate_prompt(data: Any, registry: NodeRegistry, targets: Iterable[str] | None = None) -> ValidationOutcome:
    """Check a prompt against the registry; see the module docstring."""
    nodes, top, parse_errors = parse_prompt(data, registry)
    if top is not None:
        return ValidationOutcome(nodes, [], parse_errors, top)
    outputs = [nid for nid, n in nodes.items() if registry[n.class_type].schema.output_node]
    if targets is not None:
        wanted = [str(t) for t in targets]
        missing = [t for t in wanted if t not in nodes]
        if not wanted or missing:
            detail = ("partial_execution_targets is empty" if not wanted
                      else f"partial_execution_targets names nodes that are not in the prompt: {missing}")
            return ValidationOutcome(nodes, [], {}, _top_error("prompt_no_outputs", "Prompt has no outputs", detail))
        outputs = [t for t in wanted if registry[nodes[t].class_type].schema.output_node] or wanted
    if not outputs:
        return ValidationOutcome(nodes, [], {}, _top_error(
            "prompt_no_outputs", "Prompt has no outputs",
            "no output node (SaveImage, PreviewImage, ...) in the prompt, so nothing would run"))

    needed = upstream_closure(nodes, outputs)
    validator = _Validator(registry, nodes)
    for node_id in sorted(needed, key=_natural):
        validator.check_node(nodes[node_id])
    graph = link_graph(nodes, needed)
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            members = sorted(component, key=_natural)
            # Name a few members, not all: a message per member listing every member grows as n^2.
            more = len(members) - MAX_LISTED
            shown = f"{members[:MAX_LISTED]}" + (f" and {more} more" if more > 0 else "")
            for node_id in members:
                validator.add(nodes[node_id], "dependency_cycle",
                              f"is part of a dependency cycle through nodes {shown}", cycle_size=len(members))

    good, dependents = _split_outputs(graph, outputs, set(validator.errors))
    outcome = ValidationOutcome(nodes, good, validator.errors, None, dependents)
    if not good:
        outcome.error = _top_error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                   "\n".join(outcome.messages()))
    return outcome


def _split_outputs(graph: nx.DiGraph, outputs: list[str], bad: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The outputs with no error upstream, and for each node with errors the outputs it spoils.

    One pass over the graph's condensation (cycles become single nodes), so that thousands of outputs
    sharing a long chain cost linear time, not a closure walk per output.
    """
    condensed = nx.condensation(graph)
    component = condensed.graph["mapping"]
    order = list(nx.topological_sort(condensed))
    tainted: set[int] = set()
    for comp in order:
        members = condensed.nodes[comp]["members"]
        if not members.isdisjoint(bad) or any(p in tainted for p in condensed.predecessors(comp)):
            tainted.add(comp)
    good = [out for out in outputs if component[out] not in tainted]
    if not bad:
        return good, {}
    position = {out: i for i, out in enumerate(outputs)}
    own: dict[int, list[str]] = {}
    for out in outputs:
        own.setdefault(component[out], []).append(out)
    # Outputs downstream of each tainted component; a component with one successor and no outputs
    # of its own shares its successor's set, so chains cost nothing extra.
    downstream: dict[int, frozenset[str]] = {}
    for comp in reversed(order):
        if comp not in tainted:
            continue
        successors = [downstream[s] for s in condensed.successors(comp)]
        mine = own.get(comp, [])
        if not mine and len(successors) == 1:
            downstream[comp] = successors[0]
        else:
            downstream[comp] = frozenset(mine).union(*successors)
    dependents: dict[str, list[str]] = {}
    for node_id in bad:
        if node_id in component:
            spoiled = downstream[component[node_id]]
            dependents[node_id] = heapq.nsmallest(MAX_DEPENDENT_OUTPUTS, spoiled, key=position.__getitem__)
    return good, dependents


def _natural(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
