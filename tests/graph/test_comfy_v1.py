"""ComfyUI V1 classes register through the adapter and behave as they do in ComfyUI."""
from __future__ import annotations

from typing import Any

import pytest

from graph.comfy_v1 import DeclarationError
from graph.executor import Executor
from graph.registry import NodeRegistry, RegistryError

from . import sample_nodes

LOG: list[str] = []


class TextRepeat:
    """A typical V1 node."""

    CATEGORY = "text"
    DESCRIPTION = "Repeat text"
    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("text", "length")
    OUTPUT_TOOLTIPS = ("the text", "its length")
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"default": "ab", "multiline": True}),
                             "times": ("INT", {"default": 2, "min": 1, "max": 10}),
                             "sep": (["", "-", " "],)},
                "optional": {"suffix": ("STRING", {"forceInput": True})},
                "hidden": {"node_id": "UNIQUE_ID", "prompt": "PROMPT"}}

    def repeat(self, text: str, times: int, sep: str, node_id: str, prompt: dict[str, Any],
               suffix: str = "") -> tuple[str, int]:
        LOG.append(f"repeat:{node_id}:{len(prompt)}")
        out = sep.join([text] * times) + suffix
        return (out, len(out))


class Collect:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"items": ("*",)}}

    def run(self, items: list[Any]) -> dict[str, Any]:
        return {"ui": {"items": [str(i) for i in items]}}


class Splitter:
    RETURN_TYPES = ("STRING",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"default": "a,b,c"})}}

    def split(self, text: str) -> tuple[list[str]]:
        return (text.split(","),)


class Checked:
    """VALIDATE_INPUTS replaces the built-in checks of the inputs it names; IS_CHANGED fingerprints."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    stamp = "one"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 10}),
                             "name": (["a", "b"],)}}

    @classmethod
    def VALIDATE_INPUTS(cls, value: int) -> bool | str:
        return True if value % 2 == 0 else f"value {value} must be even"

    @classmethod
    def IS_CHANGED(cls, value: int, name: str) -> str:
        return cls.stamp

    def run(self, value: int, name: str) -> tuple[int]:
        LOG.append("checked")
        return (value,)


class Counter:
    """Keeps state on its instance between runs, like V1 nodes may."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    NOT_IDEMPOTENT = True

    def __init__(self) -> None:
        self.runs = 0

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"seed": ("INT", {"default": 0, "control_after_generate": True})}}

    def run(self, seed: int) -> tuple[int]:
        self.runs += 1
        return (self.runs,)


class LazyMix:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"use_b": ("BOOLEAN", {"default": False}),
                             "a": ("STRING", {"lazy": True}), "b": ("STRING", {"lazy": True})}}

    def check_lazy_status(self, use_b: bool, a: str | None = None, b: str | None = None) -> list[str]:
        return ["b"] if use_b else ["a"]

    def mix(self, use_b: bool, a: str | None = None, b: str | None = None) -> tuple[str]:
        return (b if use_b else a,)


class AsyncEcho:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "echo"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"default": "hi"})}}

    async def echo(self, text: str) -> tuple[str]:
        return (text + "!",)


class NodeReader:
    """Reads a node of the prompt through DYNPROMPT, as inspector plugins do."""

    RETURN_TYPES = ("STRING",)
    FUNCTION = "read"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"target": ("STRING", {"default": "1"})},
                "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"}}

    def read(self, target: str, dynprompt: Any, unique_id: str) -> dict[str, Any]:
        LOG.append(f"read:{unique_id}")
        node = dynprompt.get_node(target)
        seen = {"node": node, "real": dynprompt.get_real_node_id(unique_id),
                "parent": dynprompt.get_parent_node_id(unique_id), "display": dynprompt.get_display_node_id(unique_id),
                "has_missing": dynprompt.has_node("404"), "ids": sorted(dynprompt.all_node_ids()),
                "original": sorted(dynprompt.get_original_prompt())}
        return {"ui": {"seen": [seen]}, "result": (node["class_type"],)}


class ReadInside:
    """Expands into a NodeReader: DYNPROMPT knows the expanded node's parent and real id."""

    RETURN_TYPES = ("STRING",)
    FUNCTION = "expand"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"target": ("STRING", {"default": "1"})}}

    def expand(self, target: str) -> dict[str, Any]:
        return {"result": (["inner", 0],), "expand": {"inner": {"class_type": "NodeReader", "inputs": {"target": target}}}}


class LinkTaker:
    """A rawLink input: the node receives the link, not the value (as loop-closing nodes do)."""

    RETURN_TYPES = ("STRING",)
    FUNCTION = "take"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": ("STRING", {"rawLink": True, "forceInput": True})}}

    def take(self, source: Any) -> tuple[str]:
        return (repr(source),)


MAPPINGS = {"TextRepeat": TextRepeat, "Collect": Collect, "Splitter": Splitter, "Checked": Checked,
            "Counter": Counter, "LazyMix": LazyMix, "AsyncEcho": AsyncEcho, "NodeReader": NodeReader,
            "ReadInside": ReadInside, "LinkTaker": LinkTaker}


@pytest.fixture
def registry() -> NodeRegistry:
    reg = sample_nodes.registry()
    reg.add_v1(MAPPINGS, {"TextRepeat": "Text Repeat"}, python_module="custom_nodes.example_pack")
    LOG.clear()
    return reg


def test_object_info_has_the_v1_shape(registry: NodeRegistry) -> None:
    info = registry.object_info()["TextRepeat"]
    assert info["input"] == {
        "required": {"text": ["STRING", {"default": "ab", "multiline": True}],
                     "times": ["INT", {"default": 2, "min": 1, "max": 10}],
                     "sep": [["", "-", " "], {}]},
        "optional": {"suffix": ["STRING", {"forceInput": True}]},
        "hidden": {"node_id": "UNIQUE_ID", "prompt": "PROMPT"}}
    assert info["input_order"] == {"required": ["text", "times", "sep"], "optional": ["suffix"],
                                   "hidden": ["node_id", "prompt"]}
    assert info["output"] == ["STRING", "INT"] and info["output_name"] == ["text", "length"]
    assert info["output_is_list"] == [False, False] and info["output_tooltips"] == ["the text", "its length"]
    assert info["display_name"] == "Text Repeat" and info["category"] == "text"
    assert info["description"] == "Repeat text" and info["output_node"] is False
    assert info["python_module"] == "custom_nodes.example_pack"
    assert registry.object_info()["Splitter"]["output_is_list"] == [True]


def test_v1_nodes_run_with_hidden_inputs_lists_and_ui(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "Splitter", "inputs": {"text": "x,y"}},
        "2": {"class_type": "TextRepeat", "inputs": {"text": ["1", 0], "times": 3, "sep": "-"}},
        "3": {"class_type": "Collect", "inputs": {"items": ["2", 0]}},
    }
    result = Executor(registry).execute(prompt, "p")
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"items": ["x-x-x", "y-y-y"]}
    assert LOG == ["repeat:2:3", "repeat:2:3"]


def test_validate_inputs_replaces_builtin_checks_and_reports_failures(registry: NodeRegistry) -> None:
    def prompt(value: int) -> dict[str, Any]:
        return {"1": {"class_type": "Checked", "inputs": {"value": value, "name": "a"}},
                "2": {"class_type": "Collect", "inputs": {"items": ["1", 0]}}}

    ok = Executor(registry).execute(prompt(12), "p")  # 12 > max 10, but VALIDATE_INPUTS owns 'value'
    assert ok.status == "success" and ok.outputs["2"] == {"items": ["12"]}
    bad = Executor(registry).execute(prompt(3), "p")
    error = bad.error["node_errors"]["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed" and error["details"] == "Checked 1: value 3 must be even"


def test_is_changed_fingerprint_controls_reruns(registry: NodeRegistry) -> None:
    executor = Executor(registry)
    prompt = {"1": {"class_type": "Checked", "inputs": {"value": 2, "name": "b"}},
              "2": {"class_type": "Collect", "inputs": {"items": ["1", 0]}}}
    executor.execute(prompt, "a")
    executor.execute(prompt, "b")
    assert LOG == ["checked"]
    Checked.stamp = "two"
    try:
        executor.execute(prompt, "c")
    finally:
        Checked.stamp = "one"
    assert LOG == ["checked", "checked"]


def test_not_idempotent_instances_keep_state(registry: NodeRegistry) -> None:
    executor = Executor(registry)
    prompt = {"1": {"class_type": "Counter", "inputs": {"seed": 0}},
              "2": {"class_type": "Collect", "inputs": {"items": ["1", 0]}}}
    assert executor.execute(prompt, "a").outputs["2"] == {"items": ["1"]}
    prompt["1"]["inputs"]["seed"] = 1
    assert executor.execute(prompt, "b").outputs["2"] == {"items": ["2"]}


def test_lazy_and_async_v1_nodes(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "AsyncEcho", "inputs": {"text": "a"}},
        "2": {"class_type": "AsyncEcho", "inputs": {"text": "b"}},
        "3": {"class_type": "LazyMix", "inputs": {"use_b": True, "a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Collect", "inputs": {"items": ["3", 0]}},
    }
    result = Executor(registry).execute(prompt, "p")
    assert result.status == "success", result.error
    assert result.outputs["4"] == {"items": ["b!"]} and "1" not in result.executed


def test_dynprompt_shows_the_prompt_and_expanded_nodes(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "TextRepeat", "inputs": {"text": "ab", "times": 2, "sep": "-"}},
        "2": {"class_type": "NodeReader", "inputs": {"target": "1"}},
        "3": {"class_type": "ReadInside", "inputs": {"target": "2"}},
        "4": {"class_type": "Collect", "inputs": {"items": ["3", 0]}},
    }
    result = Executor(registry).execute(prompt, "p")
    assert result.status == "success", result.error
    [top] = result.outputs["2"]["seen"]
    assert top["node"] == {"class_type": "TextRepeat", "inputs": {"text": "ab", "times": 2, "sep": "-"}}
    assert (top["real"], top["parent"], top["display"], top["has_missing"]) == ("2", None, "2", False)
    assert top["original"] == ["1", "2", "3", "4"]
    [inner] = result.outputs["inner"]["seen"]
    assert inner["node"] == {"class_type": "NodeReader", "inputs": {"target": "1"}}
    assert (inner["real"], inner["parent"], inner["display"]) == ("3", "3", "3")
    assert "inner" in inner["ids"] and inner["original"] == ["1", "2", "3", "4"]
    assert result.outputs["4"] == {"items": ["NodeReader"]}


def test_dynprompt_names_a_missing_node(registry: NodeRegistry) -> None:
    prompt = {"2": {"class_type": "NodeReader", "inputs": {"target": "9"}}}
    result = Executor(registry).execute(prompt, "p")
    assert result.status == "error"
    assert result.error["exception_type"].endswith("NodeNotFoundError") and "Node 9 not found" in result.error["exception_message"]


def test_a_raw_link_input_receives_the_link(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "AsyncEcho", "inputs": {"text": "a"}},
        "2": {"class_type": "LinkTaker", "inputs": {"source": ["1", 0]}},
        "3": {"class_type": "Collect", "inputs": {"items": ["2", 0]}},
    }
    result = Executor(registry).execute(prompt, "p")
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"items": ["['1', 0]"]}


def test_bad_declarations_are_refused_with_the_cause() -> None:
    class NoFunction:
        RETURN_TYPES = ("INT",)
        FUNCTION = "missing"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {}}

    class BadInput:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"x": 5}}

        def run(self) -> None: ...

    class StringReturn:
        RETURN_TYPES = "INT"
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {}

        def run(self) -> None: ...

    reg = NodeRegistry()
    with pytest.raises(DeclarationError, match="NoFunction: FUNCTION must name a method"):
        reg.add_v1({"NoFunction": NoFunction})
    with pytest.raises(DeclarationError, match=r"BadInput: input 'x': expected \(TYPE, options\)"):
        reg.add_v1({"BadInput": BadInput})
    with pytest.raises(DeclarationError, match="StringReturn: RETURN_TYPES must be a tuple"):
        reg.add_v1({"StringReturn": StringReturn})
    assert len(reg) == 0


def test_duplicate_names_are_refused(registry: NodeRegistry) -> None:
    with pytest.raises(RegistryError, match="'Number' from plugin_x is already registered"):
        registry.add_v1({"Number": TextRepeat}, origin="plugin_x")


def test_plugin_failures_name_the_plugin(registry: NodeRegistry) -> None:
    class Broken:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {}}

        def run(self) -> tuple[int]:
            raise ValueError("plugin bug")

    registry.add_v1({"Broken": Broken}, python_module="custom_nodes.bad_pack")
    events: list[tuple[str, dict[str, Any]]] = []
    prompt = {"1": {"class_type": "Broken", "inputs": {}}, "2": {"class_type": "Collect", "inputs": {"items": ["1", 0]}}}
    result = Executor(registry).execute(prompt, "p", emit=lambda e, d: events.append((e, d)))
    assert result.status == "error"
    assert result.error["plugin"] == "bad_pack"
    assert result.error["exception_message"] == "[plugin bad_pack] plugin bug"


def test_combo_choices_follow_input_types_as_files_come_and_go() -> None:
    files = ["a.safetensors"]

    class PickFile:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "pick"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"name": (list(files),)}}

        def pick(self, name: str) -> tuple[str]:
            return (name,)

    reg = NodeRegistry()
    reg.add_v1({"PickFile": PickFile, "Collect": Collect})
    files.append("b.safetensors")  # a model file added while the server runs
    assert reg.object_info()["PickFile"]["input"]["required"]["name"][0] == ["a.safetensors", "b.safetensors"]
    prompt = {"1": {"class_type": "PickFile", "inputs": {"name": "b.safetensors"}},
              "2": {"class_type": "Collect", "inputs": {"items": ["1", 0]}}}
    result = Executor(reg).execute(prompt, "p")
    assert result.status == "success", result.error
    files.clear()  # a plugin whose listing now fails keeps the choices it had at registration
    PickFile.INPUT_TYPES = classmethod(lambda cls: {})  # type: ignore[method-assign]
    assert reg.object_info()["PickFile"]["input"]["required"]["name"][0] == ["a.safetensors"]
