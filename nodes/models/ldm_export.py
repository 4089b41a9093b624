"""Write diffusers/transformers modules back in the original (LDM/SGM) single-file layout.

The mapping is the inverse of what diffusers' converters in `diffusers.loaders.single_file_utils`
do, derived from the key structure alone (block counts are read from the keys), so it needs no
config. It also turns a diffusers-layout state dict into the LDM layout, which is how diffusers-layout
single files are loaded: convert here, then take the LDM path.
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nodes.models.checkpoint import CheckpointParts

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# Where each family keeps its text encoders in an original single file, by role.
TEXT_ENCODER_PREFIXES: dict[str, dict[str, str]] = {
    "sd1": {"clip_l": "cond_stage_model.transformer."},
    "sd2": {"clip_h": "cond_stage_model.model."},
    "sdxl": {"clip_l": "conditioner.embedders.0.transformer.", "clip_g": "conditioner.embedders.1.model."},
    "sdxl_refiner": {"clip_g": "conditioner.embedders.0.model."},
}
# Roles whose original layout is OpenCLIP's (fused attention in_proj, text_projection as a matrix).
OPEN_CLIP_ROLES = frozenset({"clip_h", "clip_g"})

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
}
RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                 "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_TOP = {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"}
# Current diffusers names first, then the names older diffusers releases saved.
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
                  "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
               "self_attn.out_proj": "attn.out_proj"}


class ExportError(ValueError):
    """A state dict that cannot be written in the original layout."""


def _count(keys: Iterable[str], pattern: str) -> int:
    """1 + the largest integer captured by `pattern` over `keys` (0 when nothing matches)."""
    rx = re.compile(pattern)
    found = [int(m.group(1)) for k in keys if (m := rx.match(k))]
    return max(found) + 1 if found else 0


def split_first(rest: str, table: Mapping[str, str]) -> str:
    """Rename the leading module path of `rest` by `table` (longest match first)."""
    for old in sorted(table, key=len, reverse=True):
        if rest == old or rest.startswith(old + "."):
            return table[old] + rest[len(old):]
    return rest


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> LDM `openaimodel.UNetModel` keys (without `model.diffusion_model.`)."""
    keys = list(state_dict)
    layers = _count(keys, r"down_blocks\.0\.resnets\.(\d+)\.")
    if layers == 0:
        raise ExportError("UNet state dict: no 'down_blocks.0.resnets.*' keys; not a diffusers UNet2DConditionModel")
    for b in range(_count(keys, r"down_blocks\.(\d+)\.")):
        n = _count(keys, rf"down_blocks\.{b}\.resnets\.(\d+)\.")
        if n != layers:
            raise ExportError(f"UNet state dict: down block {b} has {n} resnets, block 0 has {layers}; "
                              "the original layout needs the same number in every block")
    up_with_attention = {int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    stride = layers + 1
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        out[_unet_key_to_ldm(key, stride, up_with_attention)] = value
    return out


def encoder_key_to_ldm(key: str, stride: int, mid_attention: bool) -> str | None:
    """The LDM name of a key in the encoder half shared by the UNet and ControlNets (down and mid blocks), else None."""
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, r, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        return f"input_blocks.{1 + b * stride + r}.0.{split_first(rest, RESNET_TO_LDM)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, r, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        return f"input_blocks.{1 + b * stride + r}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m.group(1)) + 1) * stride}.0.op.{m.group(2)}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        # With an attention between them, the mid resnets are middle_block.0 and .2; without, .0 and .1.
        n = int(m.group(1)) * (2 if mid_attention else 1)
        return f"middle_block.{n}.{split_first(m.group(2), RESNET_TO_LDM)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m.group(1)}"
    return None


def _unet_key_to_ldm(key: str, stride: int, up_with_attention: set[int]) -> str:
    if (encoder := encoder_key_to_ldm(key, stride, mid_attention=True)) is not None:
        return encoder
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        b, r, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        return f"output_blocks.{b * stride + r}.0.{split_first(rest, RESNET_TO_LDM)}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        b, r, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        return f"output_blocks.{b * stride + r}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m.group(1))
        # The upsampler follows the attention in the last output block of a level, if there is one.
        slot = 2 if b in up_with_attention else 1
        return f"output_blocks.{b * stride + stride - 1}.{slot}.conv.{m.group(2)}"
    if key == "class_embedding.weight":
        return "label_emb.weight"
    renamed = split_first(key, _UNET_TOP)
    if renamed != key:
        return renamed
    raise ExportError(f"UNet state dict: key {key!r} has no place in the original layout")


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> LDM `AutoencoderKL` keys (without `first_stage_model.`)."""
    keys = list(state_dict)
    levels = _count(keys, r"decoder\.up_blocks\.(\d+)\.")
    down = _count(keys, r"encoder\.down_blocks\.(\d+)\.")
    if levels == 0 or down != levels:
        raise ExportError("VAE state dict: expected as many 'encoder.down_blocks.*' as 'decoder.up_blocks.*' "
                          f"(at least one), found {down} and {levels}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key, is_attention = _vae_key_to_ldm(key, levels)
        # The original attention projections are 1x1 convolutions.
        if is_attention and value.ndim == 2:
            value = value[:, :, None, None]
        out[new_key] = value
    return out


def _vae_key_to_ldm(key: str, levels: int) -> tuple[str, bool]:
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m.group(1)}.block.{m.group(2)}.{_shortcut(m.group(3))}", False
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m.group(1))}.block.{m.group(2)}.{_shortcut(m.group(3))}", False
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{_shortcut(m.group(3))}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        rest = split_first(m.group(2), _VAE_ATTENTION)
        return f"{m.group(1)}.mid.attn_1.{rest}", rest.split(".")[0] in {"q", "k", "v", "proj_out"}
    if re.fullmatch(r"(encoder|decoder)\.conv_(in|out)\.(weight|bias)|(post_)?quant_conv\.(weight|bias)", key):
        return key, False
    renamed = split_first(key, _VAE_TOP)
    if renamed != key:
        return renamed, False
    raise ExportError(f"VAE state dict: key {key!r} has no place in the original layout")


def _shortcut(rest: str) -> str:
    return split_first(rest, {"conv_shortcut": "nin_shortcut"})


def _text_model_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a CLIPTextModel(WithProjection) without the `text_model.` level (transformers 5 drops it)."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items() if not k.endswith("position_ids")}


def clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel keys -> the HF layout SD1/SDXL files embed (`text_model.*`, under a prefix)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in _text_model_keys(state_dict).items():
        out[key if key == "text_projection.weight" else "text_model." + key] = value
    return out


def open_clip_to_ldm(state_dict: Mapping[str, torch.Tensor],
                     text_projection: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel(WithProjection) keys -> OpenCLIP text-tower keys (SD2 and SDXL's second encoder).

    `text_projection` is the projection in transformers' Linear orientation [proj, hidden], for encoders
    loaded without one (SD2 keeps it aside); it is written transposed, as OpenCLIP stores it.
    """
    sd = _text_model_keys(state_dict)
    layers = _count(sd, r"encoder\.layers\.(\d+)\.")
    out: dict[str, torch.Tensor] = {}
    fused = {f"encoder.layers.{i}.self_attn.{p}_proj.{t}"
             for i in range(layers) for p in "qkv" for t in ("weight", "bias")}
    for key, value in sd.items():
        if key in fused:
            continue
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.removeprefix("final_layer_norm.")] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.+)", key):
            rest = split_first(m.group(2), _CLIP_LAYER)
            if rest == m.group(2):
                raise ExportError(f"text encoder state dict: key {key!r} has no place in the OpenCLIP layout")
            out[f"transformer.resblocks.{m.group(1)}.{rest}"] = value
        else:
            raise ExportError(f"text encoder state dict: key {key!r} has no place in the OpenCLIP layout")
    for i in range(layers):
        base = f"encoder.layers.{i}.self_attn."
        for kind, suffix in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            parts = [sd.get(f"{base}{p}_proj.{kind}") for p in "qkv"]
            if any(p is None for p in parts):
                raise ExportError(f"text encoder state dict: layer {i} lacks one of q/k/v_proj.{kind}")
            out[f"transformer.resblocks.{i}.attn.{suffix}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    if text_projection is not None and "text_projection" not in out:
        out["text_projection"] = text_projection.T.contiguous()
    return out


def text_encoder_to_ldm(role: str, state_dict: Mapping[str, torch.Tensor],
                        text_projection: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One text encoder in the layout its role uses in original files (HF CLIP for clip_l, OpenCLIP otherwise)."""
    if role in OPEN_CLIP_ROLES:
        return open_clip_to_ldm(state_dict, text_projection)
    if role == "clip_l":
        return clip_to_ldm(state_dict)
    raise ExportError(f"text encoder role {role!r} is not one of clip_l, clip_h, clip_g")


def _prefixed(prefix: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


def checkpoint_to_ldm(parts: CheckpointParts) -> dict[str, torch.Tensor]:
    """The whole single-file state dict of `parts` (UNet, VAE, text encoders, prediction markers)."""
    if parts.family not in TEXT_ENCODER_PREFIXES:
        raise ExportError(f"checkpoint family {parts.family!r} is not one of {sorted(TEXT_ENCODER_PREFIXES)}")
    out: dict[str, torch.Tensor] = {}
    if parts.unet is not None:
        out.update(_prefixed(UNET_PREFIX, unet_to_ldm(parts.unet.state_dict())))
    if parts.vae is not None:
        out.update(_prefixed(VAE_PREFIX, vae_to_ldm(parts.vae.state_dict())))
    prefixes = TEXT_ENCODER_PREFIXES[parts.family]
    roles = parts.extra.get("text_encoder_roles") or list(prefixes)
    if parts.text_encoders and len(roles) != len(parts.text_encoders):
        raise ExportError(f"checkpoint {parts.path!r}: {len(parts.text_encoders)} text encoders but roles {roles}")
    for role, encoder in zip(roles, parts.text_encoders):
        if role not in prefixes:
            raise ExportError(f"checkpoint {parts.path!r}: text encoder role {role!r} does not belong to family "
                              f"{parts.family!r} (expected {list(prefixes)})")
        projection = parts.extra.get("text_projections", {}).get(role)
        out.update(_prefixed(prefixes[role], text_encoder_to_ldm(role, encoder.state_dict(), projection)))
    # Markers ComfyUI and others read to pick the prediction type of a model whose weights cannot tell.
    if parts.prediction_type == "v_prediction":
        out["v_pred"] = torch.tensor([])
    if parts.scheduler_config.get("rescale_betas_zero_snr"):
        out["ztsnr"] = torch.tensor([])
    return out


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str], *,
                    dtype: torch.dtype | None = None, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (a reader that memory-maps the old file keeps a valid view)."""
    from safetensors.torch import save_file  # noqa: PLC0415 - keep module import light

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in state_dict.items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        value = value.contiguous()
        # save_file refuses tensors that share storage.
        if value.numel():
            ptr = value.untyped_storage().data_ptr()
            if ptr in storages:
                value = value.clone()
                ptr = value.untyped_storage().data_ptr()
            storages.add(ptr)
        tensors[key] = value
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        # safetensors creates files 0600; a model file gets the mode the umask gives any new file.
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        mode = tmp.stat().st_mode & 0o777
        save_file(tensors, tmp, metadata=dict(metadata) if metadata else None)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(parts: CheckpointParts, path: str | os.PathLike[str], *, dtype: torch.dtype | None = None,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write `parts` as one original-layout `.safetensors` checkpoint; returns the path."""
    meta = {"format": "pt", "diffloom.family": parts.family, "diffloom.prediction_type": parts.prediction_type}
    meta.update(metadata or {})
    return save_state_dict(checkpoint_to_ldm(parts), path, dtype=dtype, metadata=meta)


def write_diffusers_folder(parts: CheckpointParts, folder: str | os.PathLike[str], *, weights: bool = True) -> Path:
    """Write `parts` as a diffusers pipeline folder; with `weights=False`, only configs and tokenizers.

    A config-only folder is what `from_single_file(..., config=folder, local_files_only=True)` needs
    to load an original single file offline.
    """
    from nodes.models.convert import quiet_progress  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_progress():
        _write_components(parts, folder, weights)
    return folder


def _write_components(parts: CheckpointParts, folder: Path, weights: bool) -> None:
    components, settings = _pipeline_components(parts)
    index: dict[str, Any] = {"_class_name": _pipeline_class(parts), "_diffusers_version": _diffusers_version()}
    for name, (library, cls_name, obj) in components.items():
        index[name] = [library, cls_name] if obj is not None else [None, None]
        if obj is None:
            continue
        target = folder / name
        if name.startswith("tokenizer"):
            obj.save_pretrained(target)
        elif name == "scheduler":
            obj.save_config(target)
        elif weights:
            obj.save_pretrained(target, safe_serialization=True)
        elif library == "diffusers":
            obj.save_config(target)
        else:
            obj.config.save_pretrained(target)
    index.update(settings)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def without_last_layer(encoder: Any) -> Any:
    """A CLIPTextModel sharing `encoder`'s weights minus its last layer: how diffusers stores SD2's encoder,
    whose conditioning is the penultimate layer (its output then goes through the final LayerNorm)."""
    from accelerate import init_empty_weights  # noqa: PLC0415

    config = copy.deepcopy(encoder.config)
    last = config.num_hidden_layers - 1
    config.num_hidden_layers = last
    with init_empty_weights(include_buffers=False):
        cut = type(encoder)(config)
    weights = {k: v for k, v in encoder.state_dict().items() if not re.search(rf"encoder\.layers\.{last}\.", k)}
    cut.load_state_dict(weights, strict=True, assign=True)
    return cut.eval().requires_grad_(False)


def _diffusers_version() -> str:
    import diffusers  # noqa: PLC0415

    return diffusers.__version__


def _pipeline_class(parts: CheckpointParts) -> str:
    variant = parts.extra.get("variant", "base")
    if parts.family == "sdxl_refiner":
        return "StableDiffusionXLImg2ImgPipeline"
    if parts.family == "sdxl":
        return "StableDiffusionXLInpaintPipeline" if variant == "inpaint" else "StableDiffusionXLPipeline"
    return {"inpaint": "StableDiffusionInpaintPipeline", "depth": "StableDiffusionDepth2ImgPipeline",
            "ip2p": "StableDiffusionInstructPix2PixPipeline"}.get(variant, "StableDiffusionPipeline")


Component = tuple[str | None, str | None, Any]


def _pipeline_components(parts: CheckpointParts) -> tuple[dict[str, Component], dict[str, Any]]:
    """model_index.json entries: name -> (library, class name, object or None), and the pipeline's settings."""
    from diffusers import EulerDiscreteScheduler, PNDMScheduler  # noqa: PLC0415

    roles = parts.extra.get("text_encoder_roles") or list(TEXT_ENCODER_PREFIXES.get(parts.family, {}))
    encoders = dict(zip(roles, parts.text_encoders))
    tokenizers = dict(zip(roles, parts.tokenizers))
    scheduler_cls = EulerDiscreteScheduler if parts.family.startswith("sdxl") else PNDMScheduler
    scheduler = scheduler_cls.from_config(parts.scheduler_config)
    out: dict[str, Component] = {
        "unet": ("diffusers", "UNet2DConditionModel", parts.unet),
        "vae": ("diffusers", "AutoencoderKL", parts.vae),
        "scheduler": ("diffusers", type(scheduler).__name__, scheduler),
    }

    def entry(obj: Any) -> Component:
        return ("transformers", type(obj).__name__, obj) if obj is not None else (None, None, None)

    settings: dict[str, Any] = {}
    if parts.family.startswith("sdxl"):
        out["text_encoder"] = entry(encoders.get("clip_l"))
        out["tokenizer"] = entry(tokenizers.get("clip_l"))
        out["text_encoder_2"] = entry(encoders.get("clip_g"))
        out["tokenizer_2"] = entry(tokenizers.get("clip_g"))
        settings["force_zeros_for_empty_prompt"] = parts.family == "sdxl"
        if parts.family == "sdxl_refiner":
            settings["requires_aesthetics_score"] = True
    else:
        role = roles[0] if roles else "clip_l"
        encoder = encoders.get(role)
        defaults = parts.extra.get("clip_defaults") or [{}]
        if encoder is not None and parts.family == "sd2" and defaults[0].get("layer") == -2:
            encoder = without_last_layer(encoder)
        out["text_encoder"] = entry(encoder)
        out["tokenizer"] = entry(tokenizers.get(role))
        if parts.extra.get("variant") == "depth":
            out["depth_estimator"] = (None, None, None)
            out["feature_extractor"] = (None, None, None)
        else:
            out["safety_checker"] = (None, None, None)
            out["feature_extractor"] = (None, None, None)
            settings["requires_safety_checker"] = False
    return out, settings
