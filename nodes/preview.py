"""Cheap previews of a latent while it is sampled: TAESD, or a linear latent-to-RGB projection.

With `--preview-method taesd` or `auto`, a TAESD decoder in `models/vae_approx` (`taesd_decoder.*` for
SD1/SD2, `taesdxl_decoder.*` for SDXL, the original layout its authors publish) decodes previews at
full size. Otherwise the projection of the model's VAE is fitted once, by least squares, from one small
decode of random latents (so it is right for any VAE, including reduced-size and trained-here ones)
and cached on the VAE. A MODEL finds its VAE through `model_options["preview_vae"]`, which the
checkpoint loader sets.
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


TAESD_FILES = {"sd1": "taesd_decoder", "sd2": "taesd_decoder", "sdxl": "taesdxl_decoder",
               "sdxl_refiner": "taesdxl_decoder"}
_taesd: dict[str, Any] = {}


def taesd_path(family: str) -> str | None:
    """The TAESD decoder file for a model family in vae_approx, if one is there."""
    stem = TAESD_FILES.get(family)
    if stem is None:
        return None
    for name in runtime().folders.get_filename_list("vae_approx"):
        if name.rsplit("/", 1)[-1].rsplit(".", 1)[0] == stem:
            return runtime().folders.get_full_path("vae_approx", name)
    return None


def load_taesd_decoder(path: str) -> torch.nn.Module:
    """A TAESD decoder from its original file: a Sequential whose index 0 is a clamp (diffusers' starts at 1)."""
    from diffusers.models.autoencoders.vae import DecoderTiny  # noqa: PLC0415

    from .models.checkpoint import read_state_dict  # noqa: PLC0415

    state, _ = read_state_dict(path)
    mapped = {}
    for key, tensor in state.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or int(index) < 1:
            raise ValueError(f"{path}: {key!r} is not a TAESD decoder key (expected '<index>.<param>')")
        mapped[f"layers.{int(index) - 1}.{rest}"] = tensor.float()
    decoder = DecoderTiny(in_channels=4, out_channels=3, num_blocks=(3, 3, 3, 1), block_out_channels=(64, 64, 64, 64),
                          upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")
    decoder.load_state_dict(mapped)
    return decoder.eval().requires_grad_(False)


def _taesd_decoder(model: Any) -> torch.nn.Module | None:
    path = taesd_path(model.family)
    if path is None:
        return None
    with _lock:
        if path not in _taesd:
            _taesd[path] = load_taesd_decoder(path)
        return _taesd[path]


def taesd_image(decoder: torch.nn.Module, latent: torch.Tensor) -> Image.Image:
    """[C,h,w] model-space latent -> the TAESD decode of it (8x the size)."""
    with torch.inference_mode():
        out = decoder(latent[None].float().cpu())[0]  # diffusers' DecoderTiny gives -1..1
    rgb = ((out + 1) / 2).clamp(0, 1).movedim(0, -1)
    return Image.fromarray((rgb * 255).round().to(torch.uint8).numpy())


def preview_image(model: Any, denoised: torch.Tensor) -> Image.Image | None:
    """A preview of the first image of the batch, or None when previews are off or unknown for this model."""
    method = runtime().preview_method
    if method == "none":
        return None
    if method in ("auto", "taesd"):
        decoder = _taesd_decoder(model)
        if decoder is not None:
            return taesd_image(decoder, denoised[0])
    factors = _factors(model)
    if factors is None:
        return None
    img = Image.fromarray(latent_to_rgb(denoised[0], *factors))
    size = runtime().preview_max_size
    scale = min(8, max(1, size // max(img.size)))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) if scale > 1 else img
