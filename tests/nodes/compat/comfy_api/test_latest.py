"""ComfyUI V3 plugins (`comfy_entrypoint`, `io.ComfyNode`) load from custom_nodes/ and run as in ComfyUI."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from graph.executor import Executor
from graph.plugins import PluginReport
from graph.registry import NodeRegistry
from nodes.compat import load_custom_nodes

V3_PACK = '''
from comfy_api.latest import ComfyExtension, io, ui
from comfy_execution.graph_utils import GraphBuilder

CALLS = []


class Repeat(io.ComfyNode):
    """Every kind of widget, an optional socket, hidden values and a text preview."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="V3Repeat", display_name="Repeat (V3)", category="v3/text", description="Repeat text",
            inputs=[io.String.Input("text", default="ab", multiline=True),
                    io.Int.Input("times", default=2, min=1, max=10, display_mode=io.NumberDisplay.slider),
                    io.Combo.Input("sep", options=["", "-"], default="-"),
                    io.Boolean.Input("upper", default=False, label_on="UP", label_off="as is"),
                    io.String.Input("suffix", optional=True, force_input=True)],
            outputs=[io.String.Output(display_name="text"), io.Int.Output("length", tooltip="its length")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt])

    @classmethod
    def validate_inputs(cls, times):
        return True if times != 7 else "seven is unlucky"

    @classmethod
    def execute(cls, text, times, sep, upper, suffix=""):
        CALLS.append((cls.hidden.unique_id, len(cls.hidden.prompt)))
        out = sep.join([text] * times) + suffix
        out = out.upper() if upper else out
        return io.NodeOutput(out, len(out), ui=ui.PreviewText(out))


class Shout(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Shout", category="v3/text", inputs=[io.String.Input("text", force_input=True)],
                         outputs=[io.String.Output()])

    @classmethod
    async def execute(cls, text):
        return io.NodeOutput(text + "!")


class Pick(io.ComfyNode):
    """Lazy inputs: only the chosen branch runs."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Pick", inputs=[io.Boolean.Input("use_b", default=False),
                                                   io.String.Input("a", lazy=True, force_input=True),
                                                   io.String.Input("b", lazy=True, force_input=True)],
                         outputs=[io.String.Output()])

    @classmethod
    def check_lazy_status(cls, use_b, a=None, b=None):
        return ["b"] if use_b else ["a"]

    @classmethod
    def execute(cls, use_b, a=None, b=None):
        return io.NodeOutput(b if use_b else a)


class Gate(io.ComfyNode):
    """Blocks what follows it unless open; a custom type on its output."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Gate", inputs=[io.String.Input("text", force_input=True),
                                                   io.Boolean.Input("open", default=True)],
                         outputs=[io.Custom("GATED").Output()])

    @classmethod
    def execute(cls, text, open):
        return io.NodeOutput(text) if open else io.NodeOutput(block_execution="the gate is shut")


class Twice(io.ComfyNode):
    """Expands into two Shout nodes (node expansion with GraphBuilder)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Twice", inputs=[io.String.Input("text", force_input=True)],
                         outputs=[io.String.Output()], enable_expand=True)

    @classmethod
    def execute(cls, text):
        graph = GraphBuilder()
        first = graph.node("V3Shout", text=text)
        second = graph.node("V3Shout", text=first.out(0))
        return io.NodeOutput(second.out(0), expand=graph.finalize())


class Show(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Show", is_output_node=True, is_input_list=True,
                         inputs=[io.AnyType.Input("items")], outputs=[], hidden=[io.Hidden.unique_id])

    @classmethod
    def fingerprint_inputs(cls, items):
        return float("nan")  # never equal: run every time

    @classmethod
    def execute(cls, items):
        CALLS.append(("show", cls.hidden.unique_id))
        return io.NodeOutput(ui={"items": [str(i) for i in items]})


class Prompted(io.ComfyNode):
    """An input called `prompt` beside the hidden prompt: both reach the node."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Prompted", inputs=[io.String.Input("prompt", default="hi")],
                         outputs=[io.String.Output()], hidden=[io.Hidden.prompt])

    @classmethod
    def execute(cls, prompt):
        return io.NodeOutput(f"{prompt} ({len(cls.hidden.prompt)} nodes)")


class Typed(io.ComfyNode):
    """A base whose schema reads class attributes that subclasses change; its check is inherited."""

    OUT = io.Int
    NODE_ID = "V3TypedInt"

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id=cls.NODE_ID, inputs=[io.Int.Input("n", default=1)], outputs=[cls.OUT.Output()])

    @classmethod
    def validate_inputs(cls, n):
        return True if n < 100 else "n too big"

    @classmethod
    def execute(cls, n):
        return io.NodeOutput(n if cls.OUT is io.Int else f"#{n}")


class TypedText(Typed):
    OUT = io.String
    NODE_ID = "V3TypedText"


class Later(io.ComfyNode):
    """Its schema names a type the module defines after the class."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Later", inputs=[io.MultiType.Input(io.Float.Input("amount", default=0.5),
                                                                        types=[io.Mask])],
                         outputs=[Box.Output()])

    @classmethod
    def execute(cls, amount):
        return io.NodeOutput(amount * 2)


@io.comfytype(io_type="BOX")
class Box(io.ComfyTypeIO):
    pass


class Pack(ComfyExtension):
    async def on_load(self):
        CALLS.append("on_load")

    async def get_node_list(self):
        return [Repeat, Shout, Pick, Gate, Twice, Show, Prompted, Typed, TypedText, Later]


async def comfy_entrypoint():
    return Pack()
'''

BOTH = '''
from comfy_api.latest import ComfyExtension, io


class OldStyle:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return (1,)


NODE_CLASS_MAPPINGS = {"BothOld": OldStyle}


class Pack(ComfyExtension):
    async def get_node_list(self):
        raise AssertionError("a module with NODE_CLASS_MAPPINGS is not asked for its V3 nodes")


def comfy_entrypoint():
    return Pack()
'''

NOT_NODES = '''
from comfy_api.latest import ComfyExtension


class Pack(ComfyExtension):
    async def get_node_list(self):
        return ["not a class"]


def comfy_entrypoint():
    return Pack()
'''


@pytest.fixture
def v3(tmp_path: Path, folders: Any) -> tuple[NodeRegistry, PluginReport]:
    plugins = tmp_path / "custom_nodes"
    (plugins / "v3_pack").mkdir(parents=True)
    (plugins / "v3_pack" / "__init__.py").write_text(textwrap.dedent(V3_PACK))
    (plugins / "v3_bad.py").write_text(textwrap.dedent(NOT_NODES))
    (plugins / "v3_both.py").write_text(textwrap.dedent(BOTH))
    registry = NodeRegistry()
    report = load_custom_nodes(registry, paths=[str(plugins)])
    return registry, report


def run(registry: NodeRegistry, prompt: dict[str, Any], executor: Executor | None = None) -> Any:
    return (executor or Executor(registry)).execute(prompt, "p")


def test_a_v3_pack_loads_and_shows_the_v1_shape(v3: tuple[NodeRegistry, PluginReport]) -> None:
    registry, report = v3
    pack = report.get("v3_pack")
    assert pack.status == "loaded" and pack.style == "comfyui-v3", pack.cause
    assert pack.nodes == ["V3Repeat", "V3Shout", "V3Pick", "V3Gate", "V3Twice", "V3Show", "V3Prompted",
                          "V3TypedInt", "V3TypedText", "V3Later"]
    info = registry.object_info()["V3Repeat"]
    assert info["display_name"] == "Repeat (V3)" and info["category"] == "v3/text"
    assert info["python_module"] == "custom_nodes.v3_pack" and info["description"] == "Repeat text"
    required = info["input"]["required"]
    assert required["text"] == ["STRING", {"default": "ab", "multiline": True}]
    assert required["times"] == ["INT", {"default": 2, "min": 1, "max": 10, "display": "slider"}]
    assert required["sep"][0] == ["", "-"] and required["sep"][1]["default"] == "-"
    assert required["upper"] == ["BOOLEAN", {"default": False, "label_on": "UP", "label_off": "as is"}]
    assert info["input"]["optional"]["suffix"] == ["STRING", {"forceInput": True}]
    assert set(info["input"]["hidden"].values()) == {"UNIQUE_ID", "PROMPT"}
    assert info["output"] == ["STRING", "INT"] and info["output_name"] == ["text", "length"]
    assert info["output_tooltips"][1] == "its length"
    assert registry.object_info()["V3Gate"]["output"] == ["GATED"]
    assert registry.object_info()["V3Show"]["output_node"] is True


def test_v3_nodes_run_with_hidden_values_ui_async_and_lists(v3: tuple[NodeRegistry, PluginReport]) -> None:
    registry, _ = v3
    from custom_nodes.v3_pack import CALLS

    prompt = {
        "1": {"class_type": "V3Repeat", "inputs": {"text": "ab", "times": 3, "sep": "-", "upper": True}},
        "2": {"class_type": "V3Shout", "inputs": {"text": ["1", 0]}},
        "3": {"class_type": "V3Show", "inputs": {"items": ["2", 0]}},
        "4": {"class_type": "V3Show", "inputs": {"items": ["1", 1]}},
    }
    result = run(registry, prompt)
    assert result.status == "success", result.error
    assert result.outputs["1"] == {"text": ["AB-AB-AB"]}
    assert result.outputs["3"] == {"items": ["AB-AB-AB!"]} and result.outputs["4"] == {"items": ["8"]}
    assert CALLS[:2] == ["on_load", ("1", 4)]  # the hidden values of the node that ran
    assert sorted(CALLS[2:]) == [("show", "3"), ("show", "4")]  # an input-list node gets one id, not a list


def test_v3_validation_lazy_inputs_blockers_and_expansion(v3: tuple[NodeRegistry, PluginReport]) -> None:
    registry, _ = v3
    unlucky = run(registry, {"1": {"class_type": "V3Repeat", "inputs": {"text": "a", "times": 7, "sep": "",
                                                                          "upper": False}},
                             "2": {"class_type": "V3Show", "inputs": {"items": ["1", 0]}}})
    assert unlucky.status == "invalid" and "seven is unlucky" in str(unlucky.error)

    prompt = {
        "1": {"class_type": "V3Repeat", "inputs": {"text": "a", "times": 1, "sep": "", "upper": False}},
        "2": {"class_type": "V3Shout", "inputs": {"text": ["1", 0]}},
        "3": {"class_type": "V3Repeat", "inputs": {"text": "b", "times": 1, "sep": "", "upper": False}},
        "4": {"class_type": "V3Pick", "inputs": {"use_b": True, "a": ["2", 0], "b": ["3", 0]}},
        "5": {"class_type": "V3Twice", "inputs": {"text": ["4", 0]}},
        "6": {"class_type": "V3Show", "inputs": {"items": ["5", 0]}},
        "7": {"class_type": "V3Gate", "inputs": {"text": ["4", 0], "open": False}},
        "8": {"class_type": "V3Show", "inputs": {"items": ["7", 0]}},
    }
    result = run(registry, prompt)
    assert result.status == "success", result.error
    assert result.outputs["6"] == {"items": ["b!!"]}  # expanded into two shouts
    assert "2" not in result.executed  # the branch Pick did not ask for never ran
    assert "8" not in result.outputs  # blocked by the shut gate


def test_a_v3_fingerprint_controls_reruns(v3: tuple[NodeRegistry, PluginReport]) -> None:
    registry, _ = v3
    executor = Executor(registry)
    prompt = {"1": {"class_type": "V3Repeat", "inputs": {"text": "a", "times": 1, "sep": "", "upper": False}},
              "2": {"class_type": "V3Show", "inputs": {"items": ["1", 0]}}}
    assert run(registry, prompt, executor).executed == ["1", "2"]
    assert run(registry, prompt, executor).executed == ["2"]  # its fingerprint always differs


def test_an_entrypoint_that_gives_no_node_classes_fails_the_plugin(v3: tuple[NodeRegistry, PluginReport]) -> None:
    _, report = v3
    bad = report.get("v3_bad")
    assert bad.status == "failed" and "not an io.ComfyNode class" in bad.cause


def test_ui_preview_image_writes_to_the_temp_folder(runtime: Any, compat: None) -> None:
    import torch
    from comfy_api.latest import ui

    shown = ui.PreviewImage(torch.rand(2, 8, 8, 3)).as_dict()
    assert shown["animated"] == [False] and len(shown["images"]) == 2
    for image in shown["images"]:
        assert image["type"] == "temp" and (Path(runtime.folders.temp_dir) / image["subfolder"]
                                            / image["filename"]).is_file()


def test_v3_schemas_are_read_when_asked_with_their_inheritance(v3: tuple[NodeRegistry, PluginReport]) -> None:
    registry, report = v3
    info = registry.object_info()
    assert info["V3TypedInt"]["output"] == ["INT"] and info["V3TypedText"]["output"] == ["STRING"]
    assert info["V3Later"]["output"] == ["BOX"]  # a type defined after the class that names it
    assert info["V3Later"]["input"]["required"]["amount"] == ["FLOAT,MASK", {"default": 0.5, "widgetType": "FLOAT"}]
    assert info["V3Prompted"]["input"]["required"]["prompt"] == ["STRING", {"default": "hi"}]
    prompt = {"1": {"class_type": "V3Prompted", "inputs": {"prompt": "hello"}},
              "2": {"class_type": "V3TypedText", "inputs": {"n": 5}},
              "3": {"class_type": "V3Later", "inputs": {"amount": 0.25}},
              "4": {"class_type": "V3Show", "inputs": {"items": ["1", 0]}},
              "5": {"class_type": "V3Show", "inputs": {"items": ["2", 0]}},
              "6": {"class_type": "V3Show", "inputs": {"items": ["3", 0]}}}
    result = run(registry, prompt)
    assert result.status == "success", result.error
    assert result.outputs["4"] == {"items": ["hello (6 nodes)"]}
    assert result.outputs.get("5") == {"items": ["#5"]} and result.outputs.get("6") == {"items": ["0.5"]}, (
        result.outputs, result.executed)
    too_big = run(registry, {"2": {"class_type": "V3TypedText", "inputs": {"n": 500}},
                             "5": {"class_type": "V3Show", "inputs": {"items": ["2", 0]}}})
    assert too_big.status == "invalid" and "n too big" in str(too_big.error)  # the inherited check
    both = report.get("v3_both")
    assert both.status == "loaded" and both.nodes == ["BothOld"] and not both.warnings

