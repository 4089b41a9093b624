"""The shipped demo model run through diffloom's own nodes (loader, text encode, KSampler, VAE, ControlNet)."""
from __future__ import annotations

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


class DemoEngine:
    """txt2img, img2img and ControlNet pictures from the demo model, through the built-in nodes."""

    def __init__(self) -> None:
        from nodes import loaders

        self.model, self.clip, self.vae = loaders.CheckpointLoaderSimple(ckpt_name=CHECKPOINT)
        self._controlnet: Any = None

    def encode(self, text: str) -> Any:
        from nodes import text_nodes

        return text_nodes.CLIPTextEncode(text=text, clip=self.clip)

    def sample(self, prompt: str, seed: int, *, negative: str = "", cfg: float = 7.0, steps: int = 20,
               latent: dict[str, torch.Tensor] | None = None, denoise: float = 1.0, control: Image.Image | None = None,
               strength: float = 1.0) -> np.ndarray:
        """One 64x64 picture as a uint8 [H, W, 3] array."""
        from nodes import sampler_nodes, vae_nodes
        from nodes.latent import EmptyLatentImage

        positive, negative_cond = self.encode(prompt), self.encode(negative)
        if control is not None:
            from nodes import controlnet_nodes

            if self._controlnet is None:
                self._controlnet = controlnet_nodes.ControlNetLoader(control_net_name=CONTROLNET)
            positive, negative_cond = controlnet_nodes.ControlNetApplyAdvanced(
                positive=positive, negative=negative_cond, control_net=self._controlnet, image=to_image(control),
                strength=strength, start_percent=0.0, end_percent=1.0)
        latent = latent if latent is not None else EmptyLatentImage(width=64, height=64, batch_size=1)
        out = sampler_nodes.KSampler(model=self.model, seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                                     scheduler="normal", positive=positive, negative=negative_cond,
                                     latent_image=latent, denoise=denoise)
        return to_array(vae_nodes.VAEDecode(samples=out, vae=self.vae))

    def img2img(self, image: np.ndarray, prompt: str, seed: int, denoise: float) -> np.ndarray:
        from nodes import vae_nodes

        latent = vae_nodes.VAEEncode(pixels=to_image(image), vae=self.vae)
        return self.sample(prompt, seed, latent=latent, denoise=denoise)


def to_image(picture: Image.Image | np.ndarray) -> torch.Tensor:
    """A picture as ComfyUI's IMAGE: float32 [1, H, W, 3] in 0..1."""
    array = np.asarray(picture.convert("RGB") if isinstance(picture, Image.Image) else picture, dtype=np.float32)
    return torch.from_numpy(array / 255.0)[None]


def to_array(image: torch.Tensor) -> np.ndarray:
    """The first picture of an IMAGE as uint8 [H, W, 3]."""
    return (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoEngine]:
    """The runtime pointed at the repository's models folder, and the demo model loaded through it."""
    from nodes import runtime as rt
    from nodes.folders import FolderPaths

    base = tmp_path_factory.mktemp("demo_engine")
    previous = rt._runtime
    rt.configure(FolderPaths(base, models_dir=ROOT / "models", input_dir=base / "input", output_dir=base / "output",
                             temp_dir=base / "temp", create_dirs=True))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the model is small: one thread avoids synchronising two on shared cores
    try:
        yield DemoEngine()
    finally:
        torch.set_num_threads(threads)
        rt._runtime = previous
