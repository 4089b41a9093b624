"""diffloom's node declaration: a typed Python function is the node's spec.

    @node(category="latent", outputs="LATENT")
    def EmptyLatentImage(
        width: int = Int(512, min=16, max=MAX_RESOLUTION, step=8),
        height: int = Int(512, min=16, max=MAX_RESOLUTION, step=8),
        batch_size: int = Int(1, min=1, max=4096),
    ) -> dict:
        \"\"\"Create a batch of empty latents.\"\"\"

The parameter defaults say what each input is (its type, default, range, choices, tooltip),
the decorator says what comes out. The result is a `FunctionNode`, which the registry collects,
`/object_info` renders and the executor calls. Calling it directly runs the function.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .nodedef import ExecutionBlocker, NodeDef, Result, ValidationRules
from .schema import INT_MAX, Choices, InputSpec, NodeSchema, Output, Section

__all__ = ["Boolean", "Combo", "Float", "FunctionNode", "Hidden", "In", "Int", "String", "node"]


def _opts(section: Section, **items: Any) -> tuple[dict[str, Any], Section]:
    return {k: v for k, v in items.items() if v is not None and v is not False}, section


def _section(optional: bool) -> Section:
    return "optional" if optional else "required"


def Int(default: int = 0, *, min: int = -INT_MAX, max: int = INT_MAX, step: int = 1,
        tooltip: str | None = None, control_after_generate: bool = False, display: str | None = None,
        optional: bool = False, lazy: bool = False, force_input: bool = False, **extra: Any) -> Any:
    """An integer widget."""
    opts, sec = _opts(_section(optional), default=default, min=min, max=max, step=step, tooltip=tooltip,
                      control_after_generate=control_after_generate, display=display, lazy=lazy,
                      forceInput=force_input, **extra)
    opts["default"] = default
    return InputSpec("INT", opts, section=sec)


def Float(default: float = 0.0, *, min: float = -float(INT_MAX), max: float = float(INT_MAX),
          step: float = 0.1, round: float | None = None, tooltip: str | None = None,
          display: str | None = None, optional: bool = False, lazy: bool = False,
          force_input: bool = False, **extra: Any) -> Any:
    """A floating-point widget."""
    opts, sec = _opts(_section(optional), default=default, min=min, max=max, step=step, round=round,
                      tooltip=tooltip, display=display, lazy=lazy, forceInput=force_input, **extra)
    for key, value in (("default", default), ("min", min), ("max", max)):
        opts[key] = value
    return InputSpec("FLOAT", opts, section=sec)


def String(default: str = "", *, multiline: bool = False, dynamic_prompts: bool = False,
           placeholder: str | None = None, tooltip: str | None = None, optional: bool = False,
           lazy: bool = False, force_input: bool = False, **extra: Any) -> Any:
    """A text widget."""
    opts, sec = _opts(_section(optional), default=default, multiline=multiline,
                      dynamicPrompts=dynamic_prompts, placeholder=placeholder, tooltip=tooltip,
                      lazy=lazy, forceInput=force_input, **extra)
    opts["default"] = default
    return InputSpec("STRING", opts, section=sec)


def Boolean(default: bool = False, *, label_on: str | None = None, label_off: str | None = None,
            tooltip: str | None = None, optional: bool = False, lazy: bool = False, **extra: Any) -> Any:
    """A true/false widget."""
    opts, sec = _opts(_section(optional), label_on=label_on, label_off=label_off, tooltip=tooltip,
                      lazy=lazy, **extra)
    opts = {"default": default, **opts}
    return InputSpec("BOOLEAN", opts, section=sec)


def Combo(choices: Choices, *, default: str | None = None, tooltip: str | None = None,
          optional: bool = False, lazy: bool = False, **extra: Any) -> Any:
    """A choice among strings; `choices` may be a callable so file lists stay current."""
    opts, sec = _opts(_section(optional), default=default, tooltip=tooltip, lazy=lazy, **extra)
    return InputSpec("COMBO", opts, choices=choices if callable(choices) else tuple(choices), section=sec)


def In(type: str, *, tooltip: str | None = None, optional: bool = False, lazy: bool = False,
       raw_link: bool = False, **extra: Any) -> Any:
    """A socket that takes a link from another node's output of this type."""
    opts, sec = _opts(_section(optional), tooltip=tooltip, lazy=lazy, rawLink=raw_link, **extra)
    return InputSpec(type, opts, section=sec)


def Hidden(kind: str) -> Any:
    """A value the executor fills in: PROMPT, EXTRA_PNGINFO, UNIQUE_ID, DYNPROMPT, PROMPT_ID."""
    return InputSpec(kind, section="hidden")


def _outputs(outputs: str | Output | Sequence[str | Output]) -> list[Output]:
    if isinstance(outputs, (str, Output)):
        outputs = [outputs]
    return [o if isinstance(o, Output) else Output(o) for o in outputs]


def _accepts_kwargs(fn: Callable[..., Any]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def _call_with_known(fn: Callable[..., Any], values: Mapping[str, Any]) -> Any:
    """Call fn with the values it names (all of them if it takes **kwargs)."""
    if _accepts_kwargs(fn):
        return fn(**values)
    names = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in values.items() if k in names})


class FunctionNode(NodeDef):
    """A node declared with `@node` on a typed function."""

    def __init__(self, fn: Callable[..., Any], schema: NodeSchema, *,
                 fingerprint: Callable[..., Any] | None, validate: Callable[..., Any] | None,
                 check_lazy: Callable[..., Any] | None) -> None:
        self.fn = fn
        self.schema = schema
        self.accepts_extra = _accepts_kwargs(fn)
        self._fingerprint = fingerprint
        self._validate = validate
        self._check_lazy = check_lazy
        self.has_fingerprint = fingerprint is not None
        self.has_validate = validate is not None
        self.has_lazy_check = check_lazy is not None
        self._optional = [n for n, spec in schema.inputs.items() if spec.section == "optional"]
        if validate is not None:
            params = inspect.signature(validate).parameters
            self.rules = ValidationRules(replaces=frozenset(p for p in params if p in schema.inputs),
                                         replaces_all=_accepts_kwargs(validate),
                                         checks_link_types="input_types" in params)
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<node {self.schema.name}>"

    def fingerprint(self, literals: Mapping[str, Any]) -> Any:
        return _call_with_known(self._fingerprint, literals) if self._fingerprint else None

    def validate(self, values: Mapping[str, Any], input_types: Mapping[str, str]) -> bool | str:
        if self._validate is None:
            return True
        return _call_with_known(self._validate, {**values, "input_types": dict(input_types)})

    def check_lazy(self, instance: Any, values: Mapping[str, Any]) -> list[str]:
        return list(_call_with_known(self._check_lazy, values) or []) if self._check_lazy else []

    def call(self, instance: Any, kwargs: dict[str, Any]) -> Any:
        # An optional input left unset arrives as its default (None for a socket), never as its spec.
        for name in self._optional:
            if name not in kwargs:
                kwargs[name] = self.schema.inputs[name].options.get("default")
        return self.fn(**kwargs)

    def normalise(self, raw: Any) -> Result | ExecutionBlocker:
        if isinstance(raw, (Result, ExecutionBlocker)):
            return raw
        count = len(self.schema.outputs)
        if count == 1:
            return Result(outputs=(raw,))
        if count == 0:
            return super().normalise(raw)
        if not isinstance(raw, tuple) or len(raw) != count:
            raise TypeError(f"{self.name}: declared {count} outputs, the function returned "
                            f"{type(raw).__name__}{'' if not isinstance(raw, tuple) else f' of {len(raw)}'}")
        return Result(outputs=raw)


def node(fn: Callable[..., Any] | None = None, *, name: str | None = None, display_name: str | None = None,
         category: str = "diffloom", description: str | None = None, version: str | int = 1,
         outputs: str | Output | Sequence[str | Output] = (), output_node: bool = False,
         pure: bool = True, fingerprint: Callable[..., Any] | None = None,
         validate: Callable[..., Any] | None = None, check_lazy: Callable[..., Any] | None = None,
         input_is_list: bool = False, deprecated: bool = False, experimental: bool = False,
         search_aliases: Sequence[str] = ()) -> Any:
    """Declare a node from a typed function (see the module docstring)."""

    def build(f: Callable[..., Any]) -> FunctionNode:
        inputs: dict[str, InputSpec] = {}
        for pname, param in inspect.signature(f).parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                continue
            if not isinstance(param.default, InputSpec):
                raise TypeError(f"node {name or f.__name__}: parameter {pname!r} needs a spec as its default "
                                f"(Int(), Float(), String(), Boolean(), Combo(), In(), Hidden())")
            inputs[pname] = param.default
        # Keep ComfyUI's section order: required, then optional, then hidden.
        order = {"required": 0, "optional": 1, "hidden": 2}
        inputs = dict(sorted(inputs.items(), key=lambda kv: order[kv[1].section]))
        doc = inspect.getdoc(f) or ""
        schema = NodeSchema(
            name=name or f.__name__, inputs=inputs, outputs=_outputs(outputs), category=category,
            display_name=display_name, description=description if description is not None else doc.split("\n")[0],
            version=str(version), output_node=output_node, not_idempotent=not pure,
            input_is_list=input_is_list, python_module=f.__module__, deprecated=deprecated,
            experimental=experimental, search_aliases=tuple(search_aliases))
        return FunctionNode(f, schema, fingerprint=fingerprint, validate=validate, check_lazy=check_lazy)

    return build(fn) if fn is not None else build
