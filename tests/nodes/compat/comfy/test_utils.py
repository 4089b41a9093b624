"""`comfy.utils`: ProgressBar over the node context, resizing, safe model-file loading."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from graph.context import ExecutionInterrupted
from nodes.compat.comfy import utils
from nodes.models.safe_pickle import UnsafePickleError


def test_progress_bar_reports_for_the_running_node(node_run: Any) -> None:
    with node_run("9") as run:
        bar = utils.ProgressBar(4)
        bar.update(1)
        bar.update(2)
        bar.update_absolute(10, preview=("JPEG", "img", 512))
    progress = [(d["value"], d["max"], d["node"]) for e, d in run.events if e == "progress"]
    assert progress == [(1, 4, "9"), (3, 4, "9"), (4, 4, "9")]
    previews = [d for e, d in run.events if e == "preview"]
    assert previews == [{"image": ("JPEG", "img", 512), "prompt_id": "prompt-1", "node_id": "9", "display_node_id": "9"}]


def test_progress_bar_updated_from_a_helper_thread(node_run: Any) -> None:
    with node_run("4") as run:
        bar = utils.ProgressBar(2)
        worker = threading.Thread(target=lambda: [bar.update(1) for _ in range(2)])
        worker.start()
        worker.join()
    assert [(d["value"], d["node"]) for e, d in run.events if e == "progress"] == [(1, "4"), (2, "4")]


def test_progress_bar_stops_an_interrupted_prompt(node_run: Any) -> None:
    with node_run() as run:
        bar = utils.ProgressBar(3)
        bar.update(1)
        run.interrupt.set()
        with pytest.raises(ExecutionInterrupted):
            bar.update(1)


def test_progress_bar_outside_a_node_and_disabled(node_run: Any) -> None:
    bar = utils.ProgressBar(2, node_id="x")
    bar.update(1)
    assert bar.current == 1
    utils.set_progress_bar_enabled(False)
    try:
        with node_run() as run:
            utils.ProgressBar(2).update(1)
        assert run.events == []
    finally:
        utils.set_progress_bar_enabled(True)


def test_common_upscale() -> None:
    x = torch.rand(2, 3, 8, 16)
    out = utils.common_upscale(x, 32, 16, "bilinear", "disabled")
    assert torch.allclose(out, F.interpolate(x, size=(16, 32), mode="bilinear", align_corners=False))
    cropped = utils.common_upscale(x, 8, 8, "nearest-exact", "center")
    assert cropped.shape == (2, 3, 8, 8)
    assert torch.equal(cropped, x[..., 4:12])
    assert utils.common_upscale(x, 4, 2, "area", "disabled").shape == (2, 3, 2, 4)
    assert utils.common_upscale(x, 12, 6, "lanczos", "disabled").shape == (2, 3, 6, 12)
    latent = torch.randn(1, 4, 4, 4)
    up = utils.common_upscale(latent, 8, 8, "bislerp", "disabled")
    assert up.shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="upscale_method 'cubic' is not one of"):
        utils.common_upscale(x, 4, 4, "cubic", "disabled")


def test_safetensors_round_trip(tmp_path: Path) -> None:
    sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    path = tmp_path / "m.safetensors"
    utils.save_torch_file(sd, path, metadata={"format": "pt"})
    loaded = utils.load_torch_file(str(path))
    assert set(loaded) == {"w", "b"} and torch.equal(loaded["w"], sd["w"])
    again, metadata = utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    assert metadata == {"format": "pt"} and torch.equal(again["b"], sd["b"])
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_pickles_load_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 5}, path)
    sd, metadata = utils.load_torch_file(str(path), return_metadata=True)
    assert list(sd) == ["w"] and metadata is None


class _RunsCode:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.getcwd, ())


def test_pickles_that_would_run_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        utils.load_torch_file(str(path), safe_load=False)


def test_batch_and_key_helpers() -> None:
    t = torch.arange(3).reshape(3, 1)
    assert utils.repeat_to_batch_size(t, 2).flatten().tolist() == [0, 1]
    assert utils.repeat_to_batch_size(t, 7).flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert utils.repeat_to_batch_size(t, 3) is t
    sd = {"model.a": 1, "model.b": 2, "other": 3}
    assert utils.state_dict_prefix_replace(dict(sd), {"model.": "unet."}, filter_keys=True) == {"unet.a": 1, "unet.b": 2}
    assert utils.state_dict_prefix_replace(dict(sd), {"model.": ""}) == {"other": 3, "a": 1, "b": 2}
