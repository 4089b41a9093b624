"""`@node` declarations: the function signature is the schema."""
from __future__ import annotations

import pytest

from graph.declare import Combo, Float, Hidden, In, Int, String, node
from graph.schema import MAX_RESOLUTION, Output

from . import sample_nodes


def test_signature_becomes_the_object_info_entry() -> None:
    @node(category="latent", outputs=Output("LATENT", tooltip="empty latents"), version=2)
    def EmptyThing(width: int = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="pixels"),
                   mode: str = Combo(lambda: ["a", "b"], default="a"),
                   strength: float = Float(1.0, min=0.0, max=10.0, step=0.01, round=0.001),
                   note: str = String("", multiline=True, optional=True),
                   prompt: dict = Hidden("PROMPT")) -> dict:
        """Make an empty thing.

        More text that is not the description."""
        return {}

    info = EmptyThing.schema.object_info()
    assert info["input"] == {
        "required": {"width": ["INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8, "tooltip": "pixels"}],
                     "mode": [["a", "b"], {"default": "a"}],
                     "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "round": 0.001}]},
        "optional": {"note": ["STRING", {"default": "", "multiline": True}]},
        "hidden": {"prompt": "PROMPT"}}
    assert info["input_order"] == {"required": ["width", "mode", "strength"], "optional": ["note"],
                                   "hidden": ["prompt"]}
    assert info["description"] == "Make an empty thing."
    assert info["output"] == ["LATENT"] and info["output_tooltips"] == ["empty latents"]
    assert info["version"] == "2" and info["category"] == "latent" and info["name"] == "EmptyThing"
    assert EmptyThing(width=8, mode="a", strength=1.0, prompt={}) == {}  # still callable


def test_a_parameter_without_a_spec_is_refused() -> None:
    with pytest.raises(TypeError, match="parameter 'x' needs a spec"):
        @node(outputs="INT")
        def Bad(x: int = 3) -> int:
            return x


def test_multi_output_nodes_must_return_matching_tuples() -> None:
    @node(outputs=("INT", "INT"))
    def Pair(a: int = In("INT")) -> tuple[int, int]:
        return a  # type: ignore[return-value]

    with pytest.raises(TypeError, match="declared 2 outputs, the function returned int"):
        Pair.normalise(Pair.call(None, {"a": 1}))


def test_sample_registry_renders() -> None:
    info = sample_nodes.registry().object_info()
    assert info["Show"]["output_node"] is True and info["Show"]["output"] == []
    assert info["Range"]["output_is_list"] == [True]
    assert info["Switch"]["input"]["required"]["first"] == ["INT", {"lazy": True}]


def test_unset_optional_inputs_arrive_as_their_default() -> None:
    @node(outputs="STRING")
    def Greet(name: str = String("world"), suffix: str = String("!", optional=True),
              extra: int = In("INT", optional=True)) -> str:
        return f"{name}{suffix}{extra}"

    assert Greet.call(None, {"name": "you"}) == "you!None"
    assert Greet.call(None, {"name": "you", "suffix": "?", "extra": 3}) == "you?3"
