"""Helpers for node tests (the tiny-model fixtures live in tests/conftest.py)."""
from __future__ import annotations

from typing import Any


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
