"""Write a diffusers ControlNetModel in the original ControlNet layout (`control_model.*`, as lllyasviel's releases).

The inverse of `diffusers.loaders.single_file_utils.convert_controlnet_checkpoint`: the UNet-shaped
part (time embedding, input blocks, middle block) is renamed as the UNet exporter does; the hint
encoder becomes `input_hint_block.{0,2,..,2n+2}`, the zero convolutions `zero_convs.i.0` and
`middle_block_out.0`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from nodes.models.ldm_export import ExportError, save_state_dict, unet_to_ldm

CONTROL_PREFIX = "control_model."
_UNET_PART = re.compile(r"(time_embedding|conv_in|down_blocks|mid_block|class_embedding|add_embedding)\.")


def controlnet_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ControlNetModel keys -> original ControlNet keys (without `control_model.`)."""
    unet_part = {k: v for k, v in state_dict.items() if _UNET_PART.match(k)}
    out = unet_to_ldm(unet_part)
    blocks = sorted({int(m.group(1)) for k in state_dict
                     if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))})
    if blocks != list(range(len(blocks))):
        raise ExportError(f"ControlNet state dict: conditioning embedding blocks {blocks} are not 0..n-1")
    hint_out = 2 * (len(blocks) + 1)
    for key, value in state_dict.items():
        if key in unet_part:
            continue
        if m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(weight|bias)", key):
            out[f"input_hint_block.0.{m.group(1)}"] = value
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(weight|bias)", key):
            out[f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{m.group(2)}"] = value
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(weight|bias)", key):
            out[f"input_hint_block.{hint_out}.{m.group(1)}"] = value
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(weight|bias)", key):
            out[f"zero_convs.{m.group(1)}.0.{m.group(2)}"] = value
        elif m := re.fullmatch(r"controlnet_mid_block\.(weight|bias)", key):
            out[f"middle_block_out.0.{m.group(1)}"] = value
        else:
            raise ExportError(f"ControlNet state dict: key {key!r} has no place in the original layout")
    return out


def save_controlnet(controlnet: torch.nn.Module, path: str | os.PathLike[str], *, dtype: torch.dtype | None = None,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write `controlnet` as one original-layout ControlNet `.safetensors` file; returns the path."""
    state = {CONTROL_PREFIX + k: v for k, v in controlnet_to_ldm(controlnet.state_dict()).items()}
    meta = {"format": "pt"}
    meta.update(metadata or {})
    return save_state_dict(state, path, dtype=dtype, metadata=meta)
