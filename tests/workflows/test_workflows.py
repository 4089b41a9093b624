"""Every file in workflows/ runs end to end through the executor (on tiny models)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from graph.executor import Executor
from graph.validation import validate_prompt

from .conftest import WORKFLOWS, copy_inputs, tiny_version


def test_there_are_workflows_for_every_stage() -> None:
    names = {p.stem for p in WORKFLOWS}
    assert {"txt2img", "txt2img_sdxl", "img2img", "inpaint", "outpaint", "lora", "hires_fix", "step_sampling",
            "controlnet_canny", "controlnet_depth", "depth2img"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_file_is_valid_api_format(path: Path, registry: Any) -> None:
    prompt = json.loads(path.read_text())
    outcome = validate_prompt(tiny_version(prompt), registry)
    # Only file choices may fail before the tiny models and inputs are in place.
    kinds = {e.type for errs in outcome.node_errors.values() for e in errs}
    assert kinds <= {"value_not_in_list", "custom_validation_failed"}, outcome.messages()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_end_to_end(path: Path, registry: Any, runtime: Any) -> None:
    copy_inputs(Path(runtime.folders.input_dir))
    result = Executor(registry).execute(tiny_version(json.loads(path.read_text())), path.stem)
    assert result.status == "success", result.error
    images = [img for ui in result.outputs.values() for img in ui.get("images", [])]
    assert images, "a workflow must save or preview an image"
    for record in images:
        folder = Path(runtime.folders.get_directory_by_type(record["type"])) / record["subfolder"]
        with Image.open(folder / record["filename"]) as img:
            assert img.size[0] >= 64 and img.size[1] >= 64
