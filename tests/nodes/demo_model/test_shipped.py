"""The demo model ships in models/: small, in the standard layouts, the default of a fresh checkout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from safetensors import safe_open

from nodes.demo_model import measure
from nodes.demo_model.train import CHECKPOINT_NAME, CONTROLNET_NAME, EDGES_CONTROLNET_NAME
from nodes.folders import FolderPaths
from tests.nodes.demo_model.conftest import ROOT

CHECKPOINT = ROOT / "models" / "checkpoints" / CHECKPOINT_NAME
CONTROLNET = ROOT / "models" / "controlnet" / CONTROLNET_NAME
EDGES_CONTROLNET = ROOT / "models" / "controlnet" / EDGES_CONTROLNET_NAME


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="numpy") as handle:
        return handle.metadata()


def test_files_are_small_and_in_the_standard_layouts() -> None:
    assert CHECKPOINT.stat().st_size < 16_000_000
    assert CONTROLNET.stat().st_size < 5_000_000 and EDGES_CONTROLNET.stat().st_size < 5_000_000
    with safe_open(str(CHECKPOINT), framework="numpy") as handle:
        keys = set(handle.keys())
    # the original SD 1.x single-file layout: UNet, VAE and CLIP text encoder under their LDM prefixes
    for prefix in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."):
        assert any(k.startswith(prefix) for k in keys), prefix
    for controlnet in (CONTROLNET, EDGES_CONTROLNET):
        with safe_open(str(controlnet), framework="numpy") as handle:
            assert all(k.startswith("control_model.") for k in handle.keys())
    meta = _metadata(CHECKPOINT)
    assert meta["modelspec.resolution"] == "64x64" and meta["modelspec.license"] == "Apache-2.0"
    # the same training run: the edge ControlNet came later, with its own step count added to the settings
    training = json.loads(meta["diffloom.training"])
    assert json.loads(_metadata(CONTROLNET)["diffloom.training"]) == training
    assert json.loads(_metadata(EDGES_CONTROLNET)["diffloom.training"]).items() >= training.items()


def test_it_is_the_first_checkpoint_so_the_editor_opens_on_it() -> None:
    folders = FolderPaths(ROOT, models_dir=ROOT / "models", create_dirs=False)
    assert folders.get_filename_list("checkpoints")[0] == CHECKPOINT_NAME
    assert {CONTROLNET_NAME, EDGES_CONTROLNET_NAME} <= set(folders.get_filename_list("controlnet"))


def test_the_readme_run_makes_its_picture(tmp_path: Path) -> None:
    """`python server.py run workflows/txt2img.json`, as README says: the shipped model draws the red circle."""
    env = {**os.environ, "GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "server.py", "run", "workflows/txt2img.json", "--output", str(tmp_path),
                           "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    (written,) = [Path(line) for line in done.stdout.splitlines()]
    with Image.open(written) as image:
        assert image.size == (64, 64)
        reading = measure.read_colours(image)
    assert reading.dominant == "red" and reading.background == "white", reading
