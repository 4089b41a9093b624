"""Save the trained demo modules in the standard files: an SD1 single-file checkpoint and an original-layout ControlNet."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nodes.demo_model.architecture import SD1_SCALING
from nodes.models.checkpoint import CheckpointParts, scheduler_config
from nodes.models.ldm_export import save_checkpoint
from nodes.models.tokenizers import clip_tokenizer


@torch.no_grad()
def fold_latent_normalisation(vae: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Reparametrise `vae` in place so its latents are (z - mean) / std / SD1_SCALING; decoding is unchanged.

    SD1 files carry no scaling factor: every SD1 loader multiplies latents by 0.18215. Folding the
    measured per-channel mean and std into quant_conv and post_quant_conv (both 1x1 convolutions)
    gives our latents the unit variance the diffusion model expects after that multiplication.
    """
    scale = (std * SD1_SCALING).to(torch.float64)
    shift = mean.to(torch.float64)
    channels = scale.numel()
    q = vae.quant_conv  # 2*C outputs: means, then log-variances
    w, b = q.weight.double(), q.bias.double()
    w[:channels] /= scale[:, None, None, None]
    b[:channels] = (b[:channels] - shift) / scale
    b[channels:] -= 2.0 * torch.log(scale)
    q.weight.copy_(w)
    q.bias.copy_(b)
    p = vae.post_quant_conv  # z_raw = z * scale + shift feeds the original 1x1 convolution
    pw, pb = p.weight.double(), p.bias.double()
    p.bias.copy_(pb + (pw[:, :, 0, 0] * shift[None, :]).sum(1))
    p.weight.copy_(pw * scale[None, :, None, None])


def save_sd1_checkpoint(unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, path: str | os.PathLike[str], *,
                        metadata: Mapping[str, str] | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write the three modules as one SD1 original-layout `.safetensors` file (fp16 by default)."""
    parts = CheckpointParts(family="sd1", prediction_type="epsilon", unet=unet, vae=vae, text_encoders=[text_encoder],
                            tokenizers=[clip_tokenizer("sd1")], scheduler_config=scheduler_config("epsilon"),
                            path=str(path), extra={"text_encoder_roles": ["clip_l"]})
    return save_checkpoint(parts, path, dtype=dtype, metadata=metadata)


def latent_statistics(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of [N, C, H, W] latents."""
    flat = latents.transpose(0, 1).reshape(latents.shape[1], -1).double()
    std = flat.std(1)
    if not bool(torch.isfinite(std).all()) or float(std.min()) <= 0 or math.isnan(float(std.sum())):
        raise ValueError(f"latent statistics: per-channel std {std.tolist()} must be finite and positive")
    return flat.mean(1).float(), std.float()
