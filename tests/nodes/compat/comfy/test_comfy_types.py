"""`comfy.comfy_types`: IO names are the engine's plain type strings; the ABC and mixins work with the adapter."""
from __future__ import annotations

import json
from typing import Any

from graph.executor import Executor
from graph.registry import NodeRegistry
from nodes.compat.comfy.comfy_types import IO, CheckLazyMixin, ComfyNodeABC, InputTypeDict


class Typed(ComfyNodeABC, CheckLazyMixin):
    CATEGORY = "test"
    RETURN_TYPES = (IO.STRING, IO.INT)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {"required": {"value": (IO.INT, {"default": 2}), "any": (IO.ANY, {"lazy": True}),
                             "choice": (IO.COMBO, {"options": ["a", "b"]})}}

    def run(self, value: int, choice: str, any: Any = None) -> tuple[str, int]:  # noqa: A002
        return (f"{choice}{value}{any}", value)


def test_io_members_are_plain_strings() -> None:
    assert IO.IMAGE == "IMAGE" and str(IO.LATENT) == "LATENT" and f"{IO.ANY}" == "*"
    assert IO.NUMBER.split(",") == ["FLOAT", "INT"]
    assert json.dumps([IO.MASK]) == '["MASK"]'


def test_a_typed_v1_class_registers_and_runs() -> None:
    registry = NodeRegistry()
    registry.add_v1({"Typed": Typed, "Source": Source})
    info = json.loads(json.dumps(registry.object_info()["Typed"]))
    assert info["output"] == ["STRING", "INT"]
    assert info["input"]["required"]["value"] == ["INT", {"default": 2}]
    assert info["input"]["required"]["choice"] == [["a", "b"], {}]
    result = Executor(registry).execute({
        "1": {"class_type": "Source", "inputs": {}},
        "2": {"class_type": "Typed", "inputs": {"value": 3, "any": ["1", 0], "choice": "b"}},
        "3": {"class_type": "Source", "inputs": {"value": ["2", 0]}}})
    assert result.ok, result.error
    assert result.outputs["3"] == {"text": ["b3x"]}


class Source:
    """Gives 'x', or shows what it is given (an output node)."""

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"optional": {"value": ("*",)}}

    def run(self, value: Any = None) -> dict[str, Any]:
        return {"result": ("x",), "ui": {"text": [value]} if value is not None else {}}


def test_check_lazy_mixin_asks_for_unevaluated_inputs() -> None:
    assert Typed().check_lazy_status(value=1, any=None, choice="a") == ["any"]
    assert Typed().check_lazy_status(value=1, any="ready", choice="a") == []
