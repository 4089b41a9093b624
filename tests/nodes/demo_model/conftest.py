"""The shipped demo model run through diffloom's own nodes (loader, text encode, KSampler, VAE, ControlNet)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
CHECKPOINT = "diffloom-shapes.safetensors"
CONTROLNET = "diffloom-shapes-depth.safetensors"
EDGES_CONTROLNET = "diffloom-shapes-edges.safetensors"


class DemoEngine:
    """txt2img, img2img and ControlNet pictures from the demo model: API prompts run by diffloom's executor."""

    def __init__(self, registry: Any, input_dir: Path, output_dir: Path) -> None:
        from graph.executor import Executor

        # One executor for the module: its output cache keeps the loaded checkpoint and unchanged encodes,
        # as the server's would.
        self.executor = Executor(registry)
        self.input_dir, self.output_dir = input_dir, output_dir
        self._count = 0

    def _input_file(self, picture: Image.Image | np.ndarray) -> str:
        """Save a picture into the input folder for LoadImage; returns its name."""
        self._count += 1
        name = f"demo_input_{self._count}.png"
        image = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture, dtype=np.uint8))
        image.convert("RGB").save(self.input_dir / name)
        return name

    def prompt(self, prompt: str, seed: int, *, negative: str = "", cfg: float = 7.0, steps: int = 20,
               init: Image.Image | np.ndarray | None = None, denoise: float = 1.0,
               control: Image.Image | np.ndarray | None = None, strength: float = 1.0,
               control_net: str = CONTROLNET) -> dict[str, Any]:
        """The API-format workflow of ComfyUI's default graph, with img2img and ControlNet where asked."""
        graph: dict[str, Any] = {
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
            "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["ckpt", 1]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["ckpt", 1]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "sampler": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0],
                "latent_image": ["latent", 0], "denoise": denoise}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "demo"}},
        }
        if init is not None:
            graph["init"] = {"class_type": "LoadImage", "inputs": {"image": self._input_file(init)}}
            graph["latent"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["init", 0], "vae": ["ckpt", 2]}}
        if control is not None:
            graph["map"] = {"class_type": "LoadImage", "inputs": {"image": self._input_file(control)}}
            graph["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control_net}}
            graph["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
                "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["map", 0],
                "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}
            graph["sampler"]["inputs"].update(positive=["apply", 0], negative=["apply", 1])
        return graph

    def run(self, graph: dict[str, Any]) -> np.ndarray:
        """Run a workflow and read back the PNG its SaveImage wrote, as a uint8 [H, W, 3] array."""
        result = self.executor.execute(graph, str(uuid.uuid4()))
        assert result.ok, result.error
        record = result.outputs["save"]["images"][0]
        with Image.open(self.output_dir / record["subfolder"] / record["filename"]) as image:
            return np.asarray(image.convert("RGB"))

    def sample(self, prompt: str, seed: int, **options: Any) -> np.ndarray:
        """One 64x64 picture as a uint8 [H, W, 3] array."""
        return self.run(self.prompt(prompt, seed, **options))

    def img2img(self, image: np.ndarray, prompt: str, seed: int, denoise: float) -> np.ndarray:
        return self.sample(prompt, seed, init=image, denoise=denoise)


@pytest.fixture(scope="module")
def demo(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoEngine]:
    """The runtime pointed at the repository's models folder, and an executor to run the demo model's workflows."""
    from nodes import runtime as rt
    from nodes.folders import FolderPaths

    base = tmp_path_factory.mktemp("demo_engine")
    previous = rt._runtime
    folders = FolderPaths(base, models_dir=ROOT / "models", input_dir=base / "input", output_dir=base / "output",
                          temp_dir=base / "temp", create_dirs=True)
    rt.configure(folders)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is small: one thread avoids synchronising two on shared cores
    try:
        yield DemoEngine(registry, base / "input", base / "output")
    finally:
        torch.set_num_threads(threads)
        rt._runtime = previous
