"""Node schemas: what a node takes and gives, rendered as ComfyUI's `/object_info` JSON.

An `InputSpec` describes one input (a widget value or a socket), an `Output` one output,
a `NodeSchema` a whole node type. Both our own declarations (`graph.declare`) and ComfyUI V1
classes (`graph.comfy_v1`) produce these, so validation, the editor and the executor see one shape.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_RESOLUTION = 16384
INT_MAX = 0xFFFFFFFFFFFFFFFF

Section = Literal["required", "optional", "hidden"]
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
HIDDEN_KINDS = frozenset({"PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "AUTH_TOKEN_COMFY_ORG",
                          "API_KEY_COMFY_ORG", "PROMPT_ID"})

Choices = Sequence[str] | Callable[[], Sequence[str]]


@dataclass(frozen=True)
class InputSpec:
    """One input of a node: a widget value (INT, FLOAT, STRING, BOOLEAN, COMBO) or a typed socket."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)
    choices: Choices | None = None
    section: Section = "required"

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy", False))

    @property
    def raw_link(self) -> bool:
        """The node receives the link itself, not the value behind it (ComfyUI's `rawLink`)."""
        return bool(self.options.get("rawLink", False))

    @property
    def optional(self) -> bool:
        return self.section == "optional"

    def choice_list(self) -> list[str]:
        """The allowed values of a combo, evaluated now (file lists change while the server runs)."""
        if self.choices is None:
            return []
        values = self.choices() if callable(self.choices) else self.choices
        return list(values)

    def v1(self) -> Any:
        """This input in ComfyUI's V1 `object_info` shape."""
        if self.section == "hidden":
            return self.type
        if self.type == "COMBO":
            return [self.choice_list(), dict(self.options)]
        return [self.type, dict(self.options)] if self.options else [self.type]


@dataclass(frozen=True)
class Output:
    """One output slot of a node."""

    type: str
    name: str | None = None
    tooltip: str | None = None
    is_list: bool = False

    @property
    def display_name(self) -> str:
        return self.name or self.type


@dataclass
class NodeSchema:
    """Everything the outside world knows about a node type."""

    name: str
    inputs: dict[str, InputSpec]
    outputs: list[Output]
    category: str = "diffloom"
    display_name: str | None = None
    description: str = ""
    version: str = "1"
    output_node: bool = False
    not_idempotent: bool = False
    input_is_list: bool = False
    python_module: str = "nodes"
    deprecated: bool = False
    experimental: bool = False
    search_aliases: tuple[str, ...] = ()

    def input_names(self, section: Section | None = None) -> list[str]:
        return [n for n, s in self.inputs.items() if section is None or s.section == section]

    @property
    def hidden(self) -> dict[str, str]:
        return {n: s.type for n, s in self.inputs.items() if s.section == "hidden"}

    def object_info(self) -> dict[str, Any]:
        """The V1 `/object_info` entry of this node."""
        sections: dict[str, dict[str, Any]] = {"required": {}}
        for name, spec in self.inputs.items():
            sections.setdefault(spec.section, {})[name] = spec.v1()
        info: dict[str, Any] = {
            "input": sections,
            "input_order": {sec: list(vals) for sec, vals in sections.items()},
            "output": [o.type for o in self.outputs],
            "output_is_list": [o.is_list for o in self.outputs],
            "output_name": [o.display_name for o in self.outputs],
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
            "version": self.version,
        }
        tooltips = [o.tooltip or "" for o in self.outputs]
        if any(tooltips):
            info["output_tooltips"] = tooltips
        if self.deprecated:
            info["deprecated"] = True
        if self.experimental:
            info["experimental"] = True
        if self.search_aliases:
            info["search_aliases"] = list(self.search_aliases)
        return info


def types_match(output_type: str, input_type: str) -> bool:
    """ComfyUI's link rule: '*' matches anything, comma-separated unions match if they intersect."""
    if output_type == "*" or input_type == "*":
        return True
    if output_type == input_type:
        return True
    if input_type == "COMBO" and output_type in ("COMBO", "STRING"):
        return True
    out_set = {t.strip() for t in output_type.split(",")}
    in_set = {t.strip() for t in input_type.split(",")}
    return bool(out_set & in_set)


def input_from_v1(name: str, raw: Any, section: Section) -> InputSpec:
    """Read one V1 `INPUT_TYPES` entry: `(TYPE, options)`, `([choices], options)` or a hidden kind."""
    if section == "hidden":
        return InputSpec(type=str(raw), section="hidden")
    if isinstance(raw, str):
        raw = (raw,)
    if not isinstance(raw, (tuple, list)) or not raw:
        raise ValueError(f"input {name!r}: expected (TYPE, options), got {raw!r}")
    kind, opts = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {})
    if isinstance(kind, (list, tuple)):
        return InputSpec(type="COMBO", options=dict(opts), choices=tuple(str(c) for c in kind), section=section)
    if kind == "COMBO":
        options = dict(opts)
        choices = tuple(str(c) for c in options.pop("options", ()))
        return InputSpec(type="COMBO", options=options, choices=choices, section=section)
    if not isinstance(kind, str):
        raise ValueError(f"input {name!r}: type must be a string or a list of choices, got {kind!r}")
    return InputSpec(type=kind, options=dict(opts), section=section)
