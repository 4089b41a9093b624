"""Adapter that registers a ComfyUI V1 node class (INPUT_TYPES, RETURN_TYPES, FUNCTION, ...) unchanged."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from .nodedef import NodeDef, ValidationRules
from .schema import InputSpec, NodeSchema, Output, input_from_v1


class DeclarationError(ValueError):
    """A node class whose declaration cannot be read; the message names the class and the cause."""


def _call_maybe_with_known(fn: Any, values: Mapping[str, Any]) -> Any:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**values)
    return fn(**{k: v for k, v in values.items() if k in params})


def _current_choices(cls: type, section: str, input_name: str, first: list[str]) -> Callable[[], list[str]]:
    """A combo's choices as INPUT_TYPES() gives them now, as ComfyUI asks at every /object_info.

    Plugins list model files there, and files come and go while the server runs; if INPUT_TYPES()
    fails later, the choices read at registration stand.
    """
    def current() -> list[str]:
        try:
            raw = cls.INPUT_TYPES()[section][input_name]
            return input_from_v1(input_name, raw, section).choice_list()  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a plugin's INPUT_TYPES may raise anything
            return list(first)

    return current


def schema_from_v1(name: str, cls: type, *, display_name: str | None = None,
                   python_module: str = "custom_nodes") -> NodeSchema:
    """Read a V1 class's attributes into a NodeSchema; raise DeclarationError when they are malformed."""
    try:
        declared = cls.INPUT_TYPES()
    except Exception as exc:  # a plugin's INPUT_TYPES may raise anything
        raise DeclarationError(f"{name}: INPUT_TYPES() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(declared, Mapping):
        raise DeclarationError(f"{name}: INPUT_TYPES() must return a dict, got {type(declared).__name__}")
    inputs: dict[str, InputSpec] = {}
    for section in ("required", "optional", "hidden"):
        entries = declared.get(section) or {}
        if not isinstance(entries, Mapping):
            raise DeclarationError(f"{name}: INPUT_TYPES()[{section!r}] must be a dict")
        for input_name, raw in entries.items():
            try:
                spec = input_from_v1(str(input_name), raw, section)  # type: ignore[arg-type]
            except ValueError as exc:
                raise DeclarationError(f"{name}: {exc}") from exc
            if spec.type == "COMBO" and section != "hidden":
                spec = replace(spec, choices=_current_choices(cls, section, str(input_name), spec.choice_list()))
            inputs[str(input_name)] = spec
    return_types = getattr(cls, "RETURN_TYPES", ())
    if isinstance(return_types, str) or not isinstance(return_types, (tuple, list)):
        raise DeclarationError(f"{name}: RETURN_TYPES must be a tuple of type names, got {return_types!r}")
    names = list(getattr(cls, "RETURN_NAMES", None) or [])
    tips = list(getattr(cls, "OUTPUT_TOOLTIPS", None) or [])
    is_list = getattr(cls, "OUTPUT_IS_LIST", None) or ()
    outputs = []
    for i, rtype in enumerate(return_types):
        rtype_name = "COMBO" if isinstance(rtype, (list, tuple)) else str(rtype)
        outputs.append(Output(rtype_name, name=names[i] if i < len(names) else None,
                              tooltip=tips[i] if i < len(tips) else None,
                              is_list=bool(is_list[i]) if i < len(is_list) else False))
    function = getattr(cls, "FUNCTION", None)
    if not isinstance(function, str) or not callable(getattr(cls, function, None)):
        raise DeclarationError(f"{name}: FUNCTION must name a method of the class, got {function!r}")
    return NodeSchema(
        name=name, inputs=inputs, outputs=outputs, category=str(getattr(cls, "CATEGORY", "sd")),
        display_name=display_name, description=str(getattr(cls, "DESCRIPTION", "") or ""),
        version=str(getattr(cls, "VERSION", "1")), output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)), python_module=python_module,
        deprecated=bool(getattr(cls, "DEPRECATED", False)), experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        search_aliases=tuple(getattr(cls, "SEARCH_ALIASES", ()) or ()))


class V1Node(NodeDef):
    """A ComfyUI V1 class behind the NodeDef interface."""

    def __init__(self, name: str, cls: type, *, display_name: str | None = None,
                 python_module: str = "custom_nodes") -> None:
        self.cls = cls
        self.schema = schema_from_v1(name, cls, display_name=display_name, python_module=python_module)
        self.has_fingerprint = callable(getattr(cls, "IS_CHANGED", None))
        validate = getattr(cls, "VALIDATE_INPUTS", None)
        self.has_validate = callable(validate)
        self.has_lazy_check = callable(getattr(cls, "check_lazy_status", None))
        if self.has_validate:
            params = inspect.signature(validate).parameters
            self.rules = ValidationRules(
                replaces=frozenset(p for p in params if p in self.schema.inputs),
                replaces_all=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()),
                checks_link_types="input_types" in params)

    def create_instance(self) -> Any:
        return self.cls()

    def fingerprint(self, literals: Mapping[str, Any]) -> Any:
        return _call_maybe_with_known(self.cls.IS_CHANGED, literals)

    def validate(self, values: Mapping[str, Any], input_types: Mapping[str, str]) -> bool | str:
        args = dict(values)
        if self.rules.checks_link_types:
            args["input_types"] = dict(input_types)
        return _call_maybe_with_known(self.cls.VALIDATE_INPUTS, args)

    def check_lazy(self, instance: Any, values: Mapping[str, Any]) -> list[str]:
        needed = _call_maybe_with_known(instance.check_lazy_status, values)
        return list(needed or [])

    def call(self, instance: Any, kwargs: dict[str, Any]) -> Any:
        return getattr(instance, self.cls.FUNCTION)(**kwargs)
