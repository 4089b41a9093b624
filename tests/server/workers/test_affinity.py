"""Model affinity keys: a prompt's model files from its loader inputs, a worker's from its loaded paths."""
from __future__ import annotations

from pathlib import Path

from graph.server.workers import held_model_keys, model_keys, model_names
from nodes.folders import FolderPaths


def test_a_prompt_s_models_come_from_its_loader_inputs() -> None:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/base.safetensors"}},
        "9": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux.sft", "weight_dtype": "default"}},
        "10": {"class_type": "SomePluginLoader", "inputs": {"ckpt_name": "other.ckpt"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "ckpt_name", "clip": ["4", 1]}},
        "7": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["12", 0]}},  # linked, not literal
    }
    assert model_names(prompt) == [("4", "checkpoints", "sd15/base.safetensors"),
                                   ("9", "diffusion_models", "flux.sft"), ("10", "checkpoints", "other.ckpt")]
    assert model_keys(prompt) == {"checkpoints/sd15/base.safetensors", "diffusion_models/flux.sft",
                                  "checkpoints/other.ckpt"}
    assert model_keys({"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8}}}) == frozenset()


def test_held_models_map_loaded_paths_back_to_folder_names(tmp_path: Path) -> None:
    extra = tmp_path / "elsewhere" / "unet"
    extra.mkdir(parents=True)
    folders = FolderPaths(tmp_path / "base", create_dirs=True)
    folders.add_model_folder_path("diffusion_models", extra)
    checkpoint = tmp_path / "base" / "models" / "checkpoints" / "sub" / "a.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    stats = {"models": [{"path": str(checkpoint), "state": "ready"},
                        {"path": str(extra / "u.sft"), "state": "offloaded"},
                        {"path": str(tmp_path / "not-a-model-folder" / "v.safetensors"), "state": "ready"}]}
    assert held_model_keys(stats, folders) == ["checkpoints/sub/a.safetensors", "diffusion_models/u.sft"]
    assert held_model_keys({}, folders) == []
    assert held_model_keys(stats, object()) == []  # folders that cannot say where models live
