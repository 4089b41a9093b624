"""The runtime face of a node type, shared by our declarations and ComfyUI V1 classes.

The executor and the validator only talk to `NodeDef`: its schema, its optional fingerprint,
custom validation and lazy-input check, and a way to call it. What a call returns is
normalised into a `Result`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .schema import NodeSchema


class ExecutionBlocker:
    """Returned as (or inside) an output: consumers are skipped instead of run.

    With a message, the first consumer reports it as an error; without one the branch is
    silently skipped (ComfyUI's behaviour)."""

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


@dataclass
class Result:
    """What one node call gave: output values, a UI dict for the client, or a sub-graph to expand."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None
    expand: dict[str, Any] | None = None


@dataclass(frozen=True)
class ValidationRules:
    """How a node's own validation interacts with the built-in checks."""

    # Inputs whose built-in checks (type coercion, range, combo) the node's own validation replaces.
    replaces: frozenset[str] = frozenset()
    replaces_all: bool = False
    # The node validates link types itself (V1 VALIDATE_INPUTS taking `input_types`).
    checks_link_types: bool = False


class NodeDef:
    """A registered node type. Subclasses adapt a declaration style to this interface."""

    schema: NodeSchema
    has_fingerprint: bool = False
    has_validate: bool = False
    has_lazy_check: bool = False
    rules: ValidationRules = ValidationRules()

    @property
    def name(self) -> str:
        return self.schema.name

    def create_instance(self) -> Any:
        """A per-node-id object kept between runs (V1 classes keep state on it); None if stateless."""
        return None

    def fingerprint(self, literals: Mapping[str, Any]) -> Any:
        """A value that changes when the outside world the node reads changes (IS_CHANGED)."""
        return None

    def validate(self, values: Mapping[str, Any], input_types: Mapping[str, str]) -> bool | str:
        """The node's own check of its literal values; True or an error message."""
        return True

    def check_lazy(self, instance: Any, values: Mapping[str, Any]) -> list[str]:
        """Names of lazy inputs still needed, given the values available (unevaluated are None)."""
        return []

    def call(self, instance: Any, kwargs: dict[str, Any]) -> Any:
        """Run the node once; may return a coroutine."""
        raise NotImplementedError

    def normalise(self, raw: Any) -> Result | ExecutionBlocker:
        """Turn whatever `call` returned into a Result."""
        if isinstance(raw, (Result, ExecutionBlocker)):
            return raw
        if isinstance(raw, dict):
            outputs = raw.get("result", ())
            return Result(outputs=tuple(outputs) if outputs is not None else (), ui=raw.get("ui"),
                          expand=raw.get("expand"))
        if raw is None:
            return Result(outputs=())
        if isinstance(raw, tuple):
            return Result(outputs=raw)
        raise TypeError(f"{self.name}: a node must return a tuple, a dict with 'result'/'ui'/'expand', "
                        f"or a Result; got {type(raw).__name__}")
