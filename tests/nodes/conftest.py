"""Fixtures for node tests: tiny checkpoints written once in the real single-file format, a configured runtime."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph.executor import Executor
from graph.registry import NodeRegistry


@pytest.fixture(scope="session")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base directory with tiny SD1, SD2 (v-prediction) and SDXL checkpoints in models/checkpoints."""
    from nodes.models.tiny import write_tiny_checkpoint

    base = tmp_path_factory.mktemp("diffloom_base")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for family in ("sd1", "sd2", "sdxl"):
        write_tiny_checkpoint(checkpoints, family, name=f"tiny-{family}")
    return base


@pytest.fixture
def runtime(model_base: Path, tmp_path: Path) -> Iterator[Any]:
    """The process runtime pointed at the tiny models, with fresh input/output/temp folders."""
    from nodes import runtime as rt
    from nodes.folders import FolderPaths

    folders = FolderPaths(model_base, models_dir=model_base / "models", input_dir=tmp_path / "input",
                          output_dir=tmp_path / "output", temp_dir=tmp_path / "temp", create_dirs=True)
    previous = rt._runtime
    shared_models = previous._models if previous is not None else None  # keep loaded models between tests
    yield rt.configure(folders, models=shared_models)
    rt._runtime = rt.Runtime(folders=folders, _models=rt.runtime()._models)


@pytest.fixture(scope="session")
def registry() -> NodeRegistry:
    import nodes

    return nodes.register_builtin_nodes(NodeRegistry())


@pytest.fixture
def executor(registry: NodeRegistry, runtime: Any) -> Executor:
    return Executor(registry)


def txt2img(ckpt: str = "tiny-sd1.safetensors", *, seed: int = 1, steps: int = 3, cfg: float = 4.0,
            sampler: str = "euler", scheduler: str = "normal", size: int = 64, batch: int = 1,
            positive: str = "a red circle", negative: str = "blurry", save: bool = True) -> dict[str, Any]:
    """ComfyUI's default graph (section 2.4 of the contract) at test size."""
    return {
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
                                                   "scheduler": scheduler, "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage" if save else "PreviewImage",
              "inputs": {"images": ["8", 0], **({"filename_prefix": "ComfyUI"} if save else {})}},
    }
