"""Cheap previews of a latent while it is sampled: a linear latent-to-RGB projection.

The projection of a VAE is fitted once, by least squares, from one small decode of random latents
(so it is right for any VAE, including reduced-size and trained-here ones) and cached on the VAE.
A MODEL finds its VAE through `model_options["preview_vae"]`, which the checkpoint loader sets.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .runtime import runtime

PROBE_SIZE = 16  # latent pixels per side of the fitting probe (128 px through an f=8 VAE)
_lock = threading.Lock()


def fit_latent_rgb(model: Any, vae: Any, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [C,3] and bias [3] mapping a model-space latent pixel to its decoded RGB (0..1)."""
    channels = model.latent_channels
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((1, channels, PROBE_SIZE, PROBE_SIZE), generator=generator)
    with torch.inference_mode():
        image = vae.decode(model.process_latent_out(latents))  # [1, H, W, 3] in 0..1
    pooled = F.adaptive_avg_pool2d(image.movedim(-1, 1).float(), (PROBE_SIZE, PROBE_SIZE))
    x = latents[0].reshape(channels, -1).T.double()
    y = pooled[0].reshape(3, -1).T.double()
    design = torch.cat([x, torch.ones((x.shape[0], 1), dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    return solution[:channels].float(), solution[channels].float()


def _factors(model: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    vae = model.model_options.get("preview_vae")
    if vae is None:
        return None
    with _lock:
        cached = getattr(vae, "_latent_rgb", None)
        if cached is None or cached[0].shape[0] != model.latent_channels:
            cached = fit_latent_rgb(model, vae)
            vae._latent_rgb = cached
        return cached


def latent_to_rgb(latent: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    """[C,h,w] model-space latent -> [h,w,3] uint8."""
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), weights) + bias
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def preview_image(model: Any, denoised: torch.Tensor) -> Image.Image | None:
    """A preview of the first image of the batch, or None when previews are off or unknown for this model."""
    method = runtime().preview_method
    if method == "none":
        return None
    factors = _factors(model)
    if factors is None:
        return None
    img = Image.fromarray(latent_to_rgb(denoised[0], *factors))
    size = runtime().preview_max_size
    scale = min(8, max(1, size // max(img.size)))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) if scale > 1 else img
