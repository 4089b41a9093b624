"""Build diffusers/transformers modules from an original-layout state dict, without extra copies.

Keys are renamed by diffusers' own converters (`diffusers.loaders.single_file_utils`); modules are
created on the meta device and the (memory-mapped) tensors are assigned to them, so a weight is
copied only when its dtype or device has to change.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from nodes.models.detect import UNET_PREFIX, CheckpointError, TextEncoderSpec

# diffusers' OpenCLIP converter skips SD2's last layer by key name; a private prefix keeps every layer.
_OPEN_CLIP_PREFIX = "diffloom_open_clip."
_HF_CLIP_PREFIX = "cond_stage_model.transformer."


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide diffusers' and transformers' load/save progress bars for the duration, then restore them."""
    from diffusers.utils import logging as df_logging  # noqa: PLC0415
    from transformers.utils import logging as tf_logging  # noqa: PLC0415

    df_was, tf_was = df_logging.is_progress_bar_enabled(), tf_logging.is_progress_bar_enabled()
    df_logging.disable_progress_bar()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if df_was:
            df_logging.enable_progress_bar()
        if tf_was:
            tf_logging.enable_progress_bar()


def subdict(state_dict: Mapping[str, torch.Tensor], prefix: str, new_prefix: str = "") -> dict[str, torch.Tensor]:
    """The entries under `prefix`, re-prefixed with `new_prefix` (tensors are shared, not copied)."""
    return {new_prefix + k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _cast(value: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if value.is_floating_point() and value.dtype != dtype:
        return value.to(device=device, dtype=dtype)
    return value if value.device == device else value.to(device)


def materialize(make: Callable[[], nn.Module], weights: Mapping[str, torch.Tensor], *, dtype: torch.dtype,
                device: torch.device, source: str, what: str) -> tuple[nn.Module, list[str]]:
    """Create a module with empty parameters and assign `weights` to it; returns it and the unused keys."""
    from accelerate import init_empty_weights  # noqa: PLC0415 - heavy import, only when loading

    with init_empty_weights(include_buffers=False):
        module = make()
    params = dict(module.named_parameters())
    missing = sorted(set(params) - set(weights))
    if missing:
        raise CheckpointError(f"{source}: the {what} lacks {len(missing)} of its {len(params)} weights, "
                              f"e.g. {missing[:4]}")
    for name, param in params.items():
        if tuple(weights[name].shape) != tuple(param.shape):
            raise CheckpointError(f"{source}: {what} weight {name!r} has shape {tuple(weights[name].shape)}, "
                                  f"the configuration read from the file expects {tuple(param.shape)}")
    module.load_state_dict({k: _cast(weights[k], dtype, device) for k in params}, strict=False, assign=True)
    for name, buffer in module.named_buffers():
        owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
        setattr(owner, name.rpartition(".")[2], _cast(buffer, dtype, device))
    module.eval()
    module.requires_grad_(False)
    buffers = {n for n, _ in module.named_buffers()}
    return module, sorted(set(weights) - set(params) - buffers)


def build_unet(state_dict: Mapping[str, torch.Tensor], prefix: str, config: dict[str, Any], *,
               dtype: torch.dtype, device: torch.device, source: str) -> tuple[nn.Module, list[str]]:
    """A diffusers UNet2DConditionModel from LDM UNet keys under `prefix`."""
    from diffusers import UNet2DConditionModel  # noqa: PLC0415
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint  # noqa: PLC0415

    weights = convert_ldm_unet_checkpoint(subdict(state_dict, prefix, UNET_PREFIX), config)
    return materialize(lambda: UNet2DConditionModel(**config), weights, dtype=dtype, device=device,
                       source=source, what="UNet")


def build_vae(state_dict: Mapping[str, torch.Tensor], prefix: str, config: dict[str, Any], *,
              dtype: torch.dtype, device: torch.device, source: str) -> tuple[nn.Module, list[str]]:
    """A diffusers AutoencoderKL from LDM VAE keys under `prefix`."""
    from diffusers import AutoencoderKL  # noqa: PLC0415
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: PLC0415

    # With no prefix, diffusers' converter reads the keys as they are.
    weights = convert_ldm_vae_checkpoint(subdict(state_dict, prefix), config)
    return materialize(lambda: AutoencoderKL(**config), weights, dtype=dtype, device=device,
                       source=source, what="VAE")


def build_text_encoder(state_dict: Mapping[str, torch.Tensor], spec: TextEncoderSpec, *, dtype: torch.dtype,
                       device: torch.device, source: str) -> tuple[nn.Module, torch.Tensor | None, list[str]]:
    """A transformers CLIPTextModel (or ...WithProjection for clip_g) from one text encoder of the file.

    Also returns the text projection of an OpenCLIP encoder loaded without one (SD2's, which the
    diffusion model never uses but an exact re-export needs), in Linear orientation [proj, hidden].
    """
    from diffusers.loaders.single_file_utils import (  # noqa: PLC0415
        convert_ldm_clip_checkpoint,
        convert_open_clip_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415

    config = CLIPTextConfig(**spec.config)
    cls = CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel
    sub = subdict(state_dict, spec.prefix)
    if spec.layout == "hf":
        # diffusers' converter strips the SD1/SDXL prefixes; bare files are given SD1's.
        converted = convert_ldm_clip_checkpoint(subdict(sub, "", _HF_CLIP_PREFIX))
    else:
        reference = _ConfigHolder(config)
        converted = convert_open_clip_checkpoint(reference, subdict(sub, "", _OPEN_CLIP_PREFIX),
                                                 prefix=_OPEN_CLIP_PREFIX)
    flat = {k.removeprefix("text_model."): v for k, v in converted.items() if not k.endswith("position_ids")}
    projection = None
    if not spec.with_projection and "text_projection.weight" in flat:
        projection = flat.pop("text_projection.weight")
    if spec.with_projection:
        # CLIPTextModelWithProjection still nests the transformer under `text_model.`.
        flat = {k if k == "text_projection.weight" else "text_model." + k: v for k, v in flat.items()}
    module, unused = materialize(lambda: cls(config), flat, dtype=dtype, device=device, source=source,
                                 what=f"{spec.role} text encoder")
    if projection is not None:
        projection = _cast(projection, dtype, device)
    return module, projection, unused


class _ConfigHolder:
    """The one thing diffusers' OpenCLIP converter reads from the model it is given: its config."""

    def __init__(self, config: Any) -> None:
        self.config = config
