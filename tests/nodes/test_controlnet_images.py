"""Control images: Canny edges, depth estimation with transformers models, SD 2 depth conditioning, previews."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from graph.executor import Executor
from nodes import controlnet_nodes as C
from nodes.controlnet_images import canny, depth_concat, load_depth_estimator
from nodes.models.tiny_control import write_tiny_control_models, write_tiny_depth_estimator

ANYTHING = "tiny-depth-anything"


@pytest.fixture(scope="module")
def names(model_base: Path) -> dict[str, str]:
    models = model_base / "models"
    out = dict(write_tiny_control_models(models))
    if not (models / "depth" / ANYTHING / "config.json").is_file():
        write_tiny_depth_estimator(models / "depth" / ANYTHING, "depth_anything")
    return {**out, "anything": ANYTHING}


def _square(size: int = 32, lo: int = 8, hi: int = 24, value: float = 1.0) -> torch.Tensor:
    image = torch.zeros(1, size, size, 3)
    image[:, lo:hi, lo:hi, :] = value
    return image


def test_canny_traces_the_outline_of_a_square() -> None:
    edges = C.Canny(image=_square(), low_threshold=0.4, high_threshold=0.8)
    assert edges.shape == (1, 32, 32, 3) and set(edges.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(edges[..., 0], edges[..., 1]) and torch.equal(edges[..., 0], edges[..., 2])
    on = edges[0, :, :, 0] > 0
    assert not on[12:20, 12:20].any() and not on[:4].any() and not on[:, 28:].any()  # nothing inside or far out
    rows, cols = torch.nonzero(on, as_tuple=True)
    assert rows.min() >= 6 and rows.max() <= 25 and cols.min() >= 6 and cols.max() <= 25  # the outline, one pixel
    assert on[7:9, 8:24].any() and on[8:24, 23:25].any()


def test_canny_thresholds_are_gradient_strengths_of_the_image_in_0_to_1() -> None:
    faint = _square(value=0.3)
    assert C.Canny(image=faint, low_threshold=0.2, high_threshold=0.4).sum() > 0
    assert C.Canny(image=faint, low_threshold=0.9, high_threshold=0.99).sum() == 0  # a 0.3 step is weaker
    batch = torch.cat([_square(), torch.zeros(1, 32, 32, 3)])
    out = C.Canny(image=batch, low_threshold=0.4, high_threshold=0.8)
    assert out.shape[0] == 2 and out[0].sum() > 0 and out[1].sum() == 0


def test_canny_refuses_masks_and_swapped_thresholds() -> None:
    with pytest.raises(ValueError, match="MASK"):
        canny(torch.zeros(1, 32, 32), 0.4, 0.8)
    with pytest.raises(ValueError, match="low_threshold 0.8"):
        canny(_square(), 0.8, 0.4)


@pytest.mark.parametrize("model", ["depth_model", "anything"])
def test_depth_estimator_gives_a_normalised_depth_image_of_the_input_size(runtime: Any, names: dict, model: str) -> None:
    image = torch.rand(2, 40, 48, 3, generator=torch.Generator().manual_seed(0))
    depth = C.DepthEstimator(image=image, model_name=names[model])
    assert depth.shape == (2, 40, 48, 3)
    assert torch.equal(depth[..., 0], depth[..., 2])
    for frame in depth[..., 0]:
        assert frame.min() == 0.0 and frame.max() == pytest.approx(1.0)
    estimator = load_depth_estimator(Path(runtime.folders.models_dir) / "depth" / names[model])
    assert estimator is load_depth_estimator(Path(runtime.folders.models_dir) / "depth" / names[model])
    assert estimator.model_type in ("dpt", "depth_anything")
    raw = estimator.predict(image)
    assert raw.ndim == 3 and raw.shape[0] == 2


def test_a_depth_folder_without_its_image_processor_is_refused(tmp_path: Path, names: dict, runtime: Any) -> None:
    folder = tmp_path / "no-processor"
    shutil.copytree(Path(runtime.folders.models_dir) / "depth" / names["depth_model"], folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="preprocessor_config.json"):
        load_depth_estimator(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        load_depth_estimator(folder)


def test_depth_concat_is_the_latent_sized_map_scaled_to_minus_one_one() -> None:
    depth = torch.linspace(0, 1, 64).repeat(1, 48, 1).unsqueeze(-1).expand(-1, -1, -1, 3)
    concat = depth_concat(depth)
    assert concat.shape == (1, 1, 6, 8)
    assert concat.min() == -1.0 and concat.max() == 1.0
    assert (concat[0, 0, :, 1:] > concat[0, 0, :, :-1]).all()  # still increasing left to right
    assert torch.equal(depth_concat(torch.full((1, 16, 16, 3), 0.5)), torch.zeros(1, 1, 2, 2))  # flat: no NaN
    with pytest.raises(ValueError, match="smaller than one latent pixel"):
        depth_concat(torch.rand(1, 4, 4, 3))


def test_depth_model_conditioning_puts_the_depth_channel_on_both_conditionings() -> None:
    positive = [[torch.zeros(1, 77, 32), {"pooled_output": None}]]
    negative = [[torch.ones(1, 77, 32), {}]]
    depth = torch.rand(1, 64, 64, 3)
    pos, neg = C.DepthModelConditioning(positive=positive, negative=negative, depth_map=depth)
    assert torch.equal(pos[0][1]["concat"], depth_concat(depth)) and neg[0][1]["concat"] is pos[0][1]["concat"]
    assert "concat" not in positive[0][1] and pos[0][1]["pooled_output"] is None


def test_control_images_are_previewable_in_a_workflow(registry: Any, runtime: Any, names: dict) -> None:
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "workflows" / "input" / "diffloom_example.png", Path(runtime.folders.input_dir))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "diffloom_example.png"}},
        "2": {"class_type": "Canny", "inputs": {"image": ["1", 0], "low_threshold": 0.2, "high_threshold": 0.5}},
        "3": {"class_type": "DepthEstimator", "inputs": {"image": ["1", 0], "model_name": names["depth_model"]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    result = Executor(registry).execute(json.loads(json.dumps(prompt)), "preview")
    assert result.status == "success", result.error
    assert all(result.outputs[n]["images"][0]["type"] == "temp" for n in ("4", "5"))
