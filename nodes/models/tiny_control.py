"""Tiny random-weight control models for tests and docs: ControlNets, depth estimators, and their files.

A tiny ControlNet copies the encoder of a tiny UNet (`nodes.models.tiny`) and keeps diffusers' default
hint encoder (16, 32, 96, 256 channels, 8x down), so its hint is the picture's size as for every
released ControlNet. Its zero convolutions are perturbed like every other weight, so that it
changes the UNet's output (a real, freshly initialised ControlNet would change nothing).
Depth estimators are transformers DPT or Depth Anything models with a few thousand weights, saved
with `save_pretrained` beside their image processor, as `models/depth/<name>/` expects them.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nodes.models.tiny import _perturb, tiny_parts

DEPTH_KINDS = ("dpt", "depth_anything")
TINY_CONTROLNET = "tiny-controlnet-sd1.safetensors"
TINY_DEPTH_MODEL = "tiny-dpt"
TINY_DEPTH_CHECKPOINT = "tiny-sd2-depth.safetensors"


def tiny_controlnet(family: str = "sd1", seed: int = 0, *, unet_seed: int = 0,
                    conditioning_channels: int = 3, **overrides: Any) -> Any:
    """A ControlNetModel fitting the tiny UNet of `family` (sd1, sd2, sdxl), every weight random.

    `overrides` change ControlNetModel arguments (e.g. a smaller `transformer_layers_per_block` or
    `mid_block_type="UNetMidBlock2D"` for a reduced-size ControlNet; the widths must stay the UNet's).
    """
    from diffusers import ControlNetModel  # noqa: PLC0415

    unet = tiny_parts(family, unet_seed).unet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet, conditioning_channels=conditioning_channels)
        if overrides:
            config = {k: v for k, v in controlnet.config.items() if not k.startswith("_")}
            config.update(overrides)
            controlnet = ControlNetModel(**config)
    _perturb(controlnet, torch.Generator().manual_seed(seed + 1000), scale=0.05)
    return controlnet.eval().requires_grad_(False)


def tiny_depth_estimator(kind: str = "dpt", seed: int = 0, *, image_size: int = 32) -> tuple[Any, Any]:
    """A tiny transformers depth-estimation model and its image processor (`kind`: dpt or depth_anything)."""
    from transformers import (  # noqa: PLC0415
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTConfig,
        DPTForDepthEstimation,
    )
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil  # noqa: PLC0415

    common = {"neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "dpt":
            config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                               image_size=image_size, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                               reassemble_factors=[4, 2, 1, 0.5], is_hybrid=False, **common)
            model = DPTForDepthEstimation(config)
            processor = DPTImageProcessorPil(size={"height": image_size, "width": image_size}, keep_aspect_ratio=False)
        elif kind == "depth_anything":
            backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                                    image_size=28, patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
            config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                                         head_hidden_size=8, **common)
            model = DepthAnythingForDepthEstimation(config)
            processor = DPTImageProcessorPil(size={"height": 28, "width": 28}, keep_aspect_ratio=True,
                                             ensure_multiple_of=14, image_mean=[0.485, 0.456, 0.406],
                                             image_std=[0.229, 0.224, 0.225])
        else:
            raise ValueError(f"tiny_depth_estimator: kind {kind!r} is not one of {DEPTH_KINDS}")
    generator = torch.Generator().manual_seed(seed + 2000)
    _perturb(model, generator)
    _lift_depth_head(model.head, generator)
    return model.eval().requires_grad_(False), processor


@torch.no_grad()
def _lift_depth_head(head: torch.nn.Module, generator: torch.Generator) -> None:
    """Make the last convolution's output mostly positive, so the head's final ReLU passes a varying depth."""
    last = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    last.weight.copy_(torch.randn(last.weight.shape, generator=generator))
    assert last.bias is not None
    last.bias.fill_(2.0)


def write_tiny_depth_estimator(folder: str | os.PathLike[str], kind: str = "dpt", seed: int = 0) -> Path:
    """Save a tiny depth estimator as transformers does: config.json, model.safetensors, preprocessor_config.json."""
    from nodes.models.convert import quiet_progress  # noqa: PLC0415

    model, processor = tiny_depth_estimator(kind, seed)
    folder = Path(folder)
    with quiet_progress():
        model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def write_tiny_controlnet(path: str | os.PathLike[str], family: str = "sd1", seed: int = 0, *,
                          layout: str = "original", **overrides: Any) -> Path:
    """Save a tiny ControlNet: one original-layout or diffusers-layout file, or a diffusers folder (`layout="folder"`)."""
    from nodes.models.controlnet_format import save_controlnet, write_controlnet_folder  # noqa: PLC0415

    controlnet = tiny_controlnet(family, seed, **overrides)
    if layout == "folder":
        return write_controlnet_folder(controlnet, path)
    return save_controlnet(controlnet, path, layout=layout)


def write_tiny_control_models(models_dir: str | os.PathLike[str]) -> Mapping[str, str]:
    """The tiny control models the workflows and node tests use, written once into a models folder.

    Returns the names to put in workflows: `controlnet` (original-layout SD1 ControlNet in
    models/controlnet), `depth_model` (a DPT folder in models/depth), `depth_checkpoint` (an SD2
    depth checkpoint in models/checkpoints).
    """
    from nodes.models.tiny import write_tiny_checkpoint  # noqa: PLC0415

    models = Path(models_dir)
    controlnet = models / "controlnet" / TINY_CONTROLNET
    if not controlnet.is_file():
        write_tiny_controlnet(controlnet, "sd1")
    depth = models / "depth" / TINY_DEPTH_MODEL
    if not (depth / "config.json").is_file():
        write_tiny_depth_estimator(depth, "dpt")
    checkpoint = models / "checkpoints" / TINY_DEPTH_CHECKPOINT
    if not checkpoint.is_file():
        write_tiny_checkpoint(checkpoint.parent, "sd2_depth", name=checkpoint.stem)
    return {"controlnet": TINY_CONTROLNET, "depth_model": TINY_DEPTH_MODEL, "depth_checkpoint": TINY_DEPTH_CHECKPOINT}
