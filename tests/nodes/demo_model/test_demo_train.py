"""The trainer at toy size: it writes loadable files, and a paused and resumed run equals an uninterrupted one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nodes.demo_model import train
from nodes.models.checkpoint import load_checkpoint

TINY = ["--vae-steps", "3", "--unet-steps", "3", "--controlnet-steps", "2", "--controlnet-edges-steps", "2",
        "--vae-batch", "2", "--unet-batch", "2",
        "--controlnet-batch", "2", "--stats-samples", "8", "--warmup", "2", "--save-every", "2"]


def _run(base: Path, *extra: str) -> int:
    return train.main(["--out", str(base / "models"), "--work-dir", str(base / "work"), *TINY, *extra])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("whole")
    assert _run(base) == 0
    return base


def test_a_run_writes_all_files_and_they_load(uninterrupted: Path) -> None:
    checkpoint = uninterrupted / "models" / "checkpoints" / train.CHECKPOINT_NAME
    controlnet = uninterrupted / "models" / "controlnet" / train.CONTROLNET_NAME
    parts = load_checkpoint(checkpoint, dtype=torch.float32)
    assert parts.family == "sd1" and parts.extra["unused_keys"] == []
    edges = uninterrupted / "models" / "controlnet" / train.EDGES_CONTROLNET_NAME
    for path in (controlnet, edges):
        assert all(k.startswith("control_model.") for k in load_file(str(path)))
    assert not torch.equal(*(load_file(str(p))["control_model.input_hint_block.0.weight"] for p in (controlnet, edges)))
    log = (uninterrupted / "work" / "train.log").read_text()
    assert "vae: step 3" in log and "unet: step 3" in log and "controlnet: step 2" in log
    assert "controlnet_edges: step 2" in log
    # the editor's default graph reads the size and prompt from ModelSpec / diffloom metadata
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="numpy") as handle:
        metadata = handle.metadata()
    assert metadata["modelspec.resolution"] == "64x64" and metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert metadata["diffloom.example_prompt"] and json.loads(metadata["diffloom.training"])["seed"]
    timings = json.loads((uninterrupted / "work" / "timings.json").read_text())
    assert set(timings) == {"vae", "unet", "controlnet", "controlnet_edges"} and all(v > 0 for v in timings.values())


def test_paused_and_resumed_run_gives_the_same_files(uninterrupted: Path, tmp_path: Path) -> None:
    # Pause inside the VAE stage (step 2), then inside the UNet stage (step 2), then finish.
    for stop in ("2", "3"):
        assert _run(tmp_path, "--stop-after", stop) == 3
    assert _run(tmp_path) == 0
    log = (tmp_path / "work" / "train.log").read_text()
    assert "paused: vae at step 2" in log and "paused: unet at step 2" in log and "unet: resuming at step 2" in log
    for sub, name in (("checkpoints", train.CHECKPOINT_NAME), ("controlnet", train.CONTROLNET_NAME),
                      ("controlnet", train.EDGES_CONTROLNET_NAME)):
        a = load_file(str(uninterrupted / "models" / sub / name))
        b = load_file(str(tmp_path / "models" / sub / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), sub


def test_other_settings_in_the_same_work_folder_are_refused(uninterrupted: Path) -> None:
    with pytest.raises(SystemExit, match="other settings"):
        _run(uninterrupted, "--unet-lr", "0.5")


def test_more_steps_continue_a_finished_stage(uninterrupted: Path, tmp_path: Path) -> None:
    # Extending only the last stage reuses the earlier ones and trains from where it stopped.
    work = tmp_path / "work"
    work.mkdir()
    for name in ("settings.json", "vae.done.pt", "vae.state.pt", "unet.done.pt", "unet.state.pt",
                 "controlnet.state.pt", "controlnet.done.pt"):
        (work / name).write_bytes((uninterrupted / "work" / name).read_bytes())
    args = ["--out", str(tmp_path / "models"), "--work-dir", str(work),
            *[a if a != "2" or i == 0 or TINY[i - 1] != "--controlnet-steps" else "3" for i, a in enumerate(TINY)]]
    assert train.main(args) == 0
    log = (work / "train.log").read_text()
    assert "controlnet: resuming at step 2" in log and "controlnet: step 3" in log
    assert "vae: step" not in log and "unet: step" not in log
