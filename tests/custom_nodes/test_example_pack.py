"""The shipped example plugin loads from custom_nodes/ and each of its nodes does what the README says."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from graph.context import Interrupt
from graph.executor import Executor
from graph.plugins import PluginReport, load_plugins
from graph.registry import NodeRegistry
from nodes.folders import FolderPaths

CUSTOM_NODES = Path(__file__).resolve().parents[2] / "custom_nodes"
NODES = ["ExampleBrightness", "ExampleShowText", "ExampleLoadText", "ExampleCountdown"]


@pytest.fixture
def pack(folders: FolderPaths) -> tuple[NodeRegistry, PluginReport]:
    registry = NodeRegistry()
    report = load_plugins([CUSTOM_NODES], registry, allow={"example_pack"})
    return registry, report


def run(registry: NodeRegistry, prompt: dict[str, Any], executor: Executor | None = None,
        **kwargs: Any) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    result = (executor or Executor(registry)).execute(prompt, "p", emit=lambda e, d: events.append((e, d)), **kwargs)
    return result, events


def test_the_example_pack_loads_with_its_web_extension(pack: tuple[NodeRegistry, PluginReport]) -> None:
    registry, report = pack
    status = report.get("example_pack")
    assert status.status == "loaded" and status.warnings == [] and status.style == "diffloom"
    assert status.nodes == NODES
    assert report.extension_scripts() == ["/extensions/example_pack/example_pack.js"]
    info = json.loads(json.dumps(registry.object_info()))
    assert info["ExampleBrightness"]["display_name"] == "Example: Brightness"
    assert info["ExampleBrightness"]["description"] == "Multiply the brightness of images."
    assert info["ExampleShowText"]["output_node"] is True
    assert all(info[name]["python_module"] == "custom_nodes.example_pack" for name in NODES)


def test_brightness_is_pure_and_cached(pack: tuple[NodeRegistry, PluginReport]) -> None:
    registry, _ = pack
    executor = Executor(registry)
    image = torch.full((1, 2, 2, 3), 0.5)
    seen: list[torch.Tensor] = []

    from graph.api import In, Result, node  # noqa: PLC0415

    @node(output_node=True, category="test")
    def Capture(image: Any = In("IMAGE")) -> Result:
        """Keep the image for the test."""
        seen.append(image)
        return Result(ui={"shape": list(image.shape)})

    @node(outputs="IMAGE", category="test")
    def Grey() -> Any:
        """A grey image."""
        return image

    registry.add(Capture)
    registry.add(Grey)
    prompt = {"1": {"class_type": "Grey", "inputs": {}},
              "2": {"class_type": "ExampleBrightness", "inputs": {"image": ["1", 0], "factor": 1.5}},
              "3": {"class_type": "Capture", "inputs": {"image": ["2", 0]}}}
    first, _ = run(registry, prompt, executor)
    assert first.ok, first.error
    assert torch.allclose(seen[0], torch.full((1, 2, 2, 3), 0.75))
    prompt["2"]["inputs"]["factor"] = 3.0
    run(registry, prompt, executor)
    assert torch.equal(seen[1], torch.ones(1, 2, 2, 3))  # clamped to 1
    again, _ = run(registry, prompt, executor)
    assert again.executed == [] and len(seen) == 2


def test_load_text_reruns_when_the_file_changes(pack: tuple[NodeRegistry, PluginReport], folders: FolderPaths) -> None:
    registry, _ = pack
    note = Path(folders.input_dir) / "notes" / "todo.txt"
    note.parent.mkdir(parents=True)
    note.write_text("buy milk", encoding="utf-8")
    (Path(folders.input_dir) / "cat.png").write_bytes(b"not text")
    choices = registry.object_info()["ExampleLoadText"]["input"]["required"]["file"][0]
    assert choices == ["notes/todo.txt"]
    prompt = {"1": {"class_type": "ExampleLoadText", "inputs": {"file": "notes/todo.txt"}},
              "2": {"class_type": "ExampleShowText", "inputs": {"text": ["1", 0]}}}
    executor = Executor(registry)
    first, _ = run(registry, prompt, executor)
    second, _ = run(registry, prompt, executor)
    note.write_text("buy oat milk", encoding="utf-8")
    third, _ = run(registry, prompt, executor)
    assert [r.outputs["2"]["text"] for r in (first, third)] == [["buy milk"], ["buy oat milk"]]
    assert second.executed == [] and "1" in third.executed
    bad, _ = run(registry, {**prompt, "1": {"class_type": "ExampleLoadText", "inputs": {"file": "../secret.txt"}}})
    assert bad.status == "invalid"


def test_countdown_reports_progress_and_messages(pack: tuple[NodeRegistry, PluginReport]) -> None:
    registry, _ = pack
    prompt = {"1": {"class_type": "ExampleCountdown", "inputs": {"steps": 3, "seconds_per_step": 0.0}},
              "2": {"class_type": "ExampleShowText", "inputs": {"text": ["1", 0]}}}
    result, events = run(registry, prompt)
    assert result.outputs["2"]["text"] == ["liftoff after 3 steps"]
    assert [(d["value"], d["max"]) for e, d in events if e == "progress"] == [(1, 3), (2, 3), (3, 3)]
    assert [d["remaining"] for e, d in events if e == "example_pack.countdown"] == [2, 1, 0]


def test_countdown_stops_when_interrupted(pack: tuple[NodeRegistry, PluginReport]) -> None:
    registry, _ = pack
    flag = Interrupt()
    seen: list[int] = []

    def emit(event: str, data: dict[str, Any]) -> None:
        if event == "progress":
            seen.append(data["value"])
            flag.set()  # the user presses Cancel after the first step

    prompt = {"1": {"class_type": "ExampleCountdown", "inputs": {"steps": 50, "seconds_per_step": 0.0}},
              "2": {"class_type": "ExampleShowText", "inputs": {"text": ["1", 0]}}}
    result = Executor(registry).execute(prompt, "p", emit=emit, interrupt=flag)
    assert result.status == "interrupted" and seen == [1]
