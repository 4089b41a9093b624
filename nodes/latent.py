"""Latent nodes: make, resize, slice and mask latent batches (ComfyUI's names, inputs and ranges)."""
from __future__ import annotations

from typing import Any

import torch

from graph.declare import Combo, Float, In, Int, node
from graph.schema import MAX_RESOLUTION

from .tensors import resize_latent

Latent = dict[str, Any]
LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]


@node(category="latent", outputs="LATENT", display_name="Empty Latent Image")
def EmptyLatentImage(width: int = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The width of the latent images in pixels."),
                     height: int = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The height of the latent images in pixels."),
                     batch_size: int = Int(1, min=1, max=4096, tooltip="The number of latent images in the batch.")) -> Latent:
    """Create a batch of empty latent images to be denoised by a sampler."""
    return {"samples": torch.zeros([batch_size, 4, height // 8, width // 8])}


def _copy(samples: Latent) -> Latent:
    return dict(samples)


@node(category="latent", outputs="LATENT", display_name="Upscale Latent")
def LatentUpscale(samples: Latent = In("LATENT"), upscale_method: str = Combo(LATENT_METHODS),
                  width: int = Int(512, min=0, max=MAX_RESOLUTION, step=8),
                  height: int = Int(512, min=0, max=MAX_RESOLUTION, step=8),
                  crop: str = Combo(["disabled", "center"])) -> Latent:
    """Resize latents to a pixel size (0 for one side keeps the aspect ratio)."""
    x = samples["samples"]
    if width == 0 and height == 0:
        return _copy(samples)
    h, w = x.shape[-2], x.shape[-1]
    if width == 0:
        height = max(64, height)
        width = max(64, round(w * height / h))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(h * width / w))
    out = _copy(samples)
    out["samples"] = resize_latent(x, width // 8, height // 8, upscale_method, crop)
    return out


@node(category="latent", outputs="LATENT", display_name="Upscale Latent By")
def LatentUpscaleBy(samples: Latent = In("LATENT"), upscale_method: str = Combo(LATENT_METHODS),
                    scale_by: float = Float(1.5, min=0.01, max=8.0, step=0.01)) -> Latent:
    """Resize latents by a factor."""
    x = samples["samples"]
    out = _copy(samples)
    out["samples"] = resize_latent(x, round(x.shape[-1] * scale_by), round(x.shape[-2] * scale_by),
                                   upscale_method, "disabled")
    return out


@node(category="latent/batch", outputs="LATENT", display_name="Latent From Batch")
def LatentFromBatch(samples: Latent = In("LATENT"), batch_index: int = Int(0, min=0, max=63),
                    length: int = Int(1, min=1, max=64)) -> Latent:
    """Take `length` latents starting at `batch_index` out of a batch."""
    x = samples["samples"]
    start = min(x.shape[0] - 1, batch_index)
    length = min(x.shape[0] - start, length)
    out = _copy(samples)
    out["samples"] = x[start:start + length].clone()
    mask = samples.get("noise_mask")
    if mask is not None:
        if mask.shape[0] == 1:
            out["noise_mask"] = mask.clone()
        else:
            if mask.shape[0] < x.shape[0]:
                mask = mask.repeat((x.shape[0] + mask.shape[0] - 1) // mask.shape[0], 1, 1, 1)[:x.shape[0]]
            out["noise_mask"] = mask[start:start + length].clone()
    indices = samples.get("batch_index", list(range(x.shape[0])))
    out["batch_index"] = [indices[i] for i in range(start, start + length)]
    return out


@node(category="latent/batch", outputs="LATENT", display_name="Repeat Latent Batch")
def RepeatLatentBatch(samples: Latent = In("LATENT"), amount: int = Int(1, min=1, max=64)) -> Latent:
    """Repeat a latent batch `amount` times."""
    x = samples["samples"]
    out = _copy(samples)
    out["samples"] = x.repeat((amount, 1, 1, 1))
    mask = samples.get("noise_mask")
    if mask is not None and mask.shape[0] > 1:
        if mask.shape[0] < x.shape[0]:
            mask = mask.repeat((x.shape[0] + mask.shape[0] - 1) // mask.shape[0], 1, 1, 1)[:x.shape[0]]
        out["noise_mask"] = mask.repeat((amount, 1, 1, 1))
    if "batch_index" in samples:
        offset = max(samples["batch_index"]) - min(samples["batch_index"]) + 1
        out["batch_index"] = [i + offset * k for k in range(amount) for i in samples["batch_index"]]
    return out


@node(category="latent/inpaint", outputs="LATENT", display_name="Set Latent Noise Mask")
def SetLatentNoiseMask(samples: Latent = In("LATENT"), mask: torch.Tensor = In("MASK")) -> Latent:
    """Only re-noise and denoise where the mask is set (inpainting on a normal model)."""
    out = _copy(samples)
    out["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
    return out


def latent_channels_fit(samples: torch.Tensor, channels: int) -> torch.Tensor:
    """Empty latents are made with 4 channels; give a model with another count zeros of its size."""
    if samples.shape[1] == channels:
        return samples
    if torch.count_nonzero(samples) == 0:
        return torch.zeros((samples.shape[0], channels, *samples.shape[2:]), dtype=samples.dtype)
    raise ValueError(f"the latent has {samples.shape[1]} channels but the model expects {channels}")

