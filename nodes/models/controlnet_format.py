"""ControlNet files: tell their layout, read their configuration from tensor shapes, convert and load them offline.

Layouts:
* original (lllyasviel's releases, ComfyUI, A1111): `control_model.` + LDM UNet encoder names,
  `input_hint_block.*`, `zero_convs.*`, `middle_block_out.*` (the prefix may be missing);
* diffusers: `ControlNetModel` names (`controlnet_cond_embedding.*`, `controlnet_down_blocks.*`),
  as a single file, or a folder's weights file with its `config.json` beside it.

The two layouts map onto each other by key names alone (block counts are read from the keys), so a
file converts without any configuration; the configuration is then read from the diffusers-layout
shapes. What weights cannot tell follows the rules of `nodes.models.detect` (attention heads by
family, GroupNorm groups), which also hold for reduced-size ControlNets: fewer or no transformer
layers in a level, a middle block without attention, a smaller hint encoder. SD1.x, SD2.x and SDXL
ControlNets are recognised by their cross-attention projections and SDXL's additional embeddings.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes import device as devices
from nodes.models import detect
from nodes.models.detect import CheckpointError
from nodes.models.ldm_export import RESNET_TO_LDM, encoder_key_to_ldm, save_state_dict, split_first

CONTROL_PREFIX = "control_model."
DIFFERENCE_KEY = "difference"  # marks a ControlNet stored as the difference to its base UNet
# LDM names of the ControlNet parts that copy the UNet's encoder (a difference file adds the UNet to them).
UNET_PARTS = ("time_embed.", "input_blocks.", "middle_block.", "label_emb.")

_RESNET_TO_DIFFUSERS = {v: k for k, v in RESNET_TO_LDM.items()}
_TOP_TO_DIFFUSERS = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
                     "input_blocks.0.0": "conv_in", "label_emb.0.0": "add_embedding.linear_1",
                     "label_emb.0.2": "add_embedding.linear_2", "middle_block_out.0": "controlnet_mid_block"}
_TOP_TO_LDM = {v: k for k, v in _TOP_TO_DIFFUSERS.items()}


class ControlNetFormatError(CheckpointError):
    """A ControlNet file whose layout or shapes cannot be understood; the message names the file."""


# ------------------------------------------------------------------------------------------ layouts


def strip_control_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys under `control_model.` without it (or the dict unchanged when nothing is prefixed)."""
    if any(k.startswith(CONTROL_PREFIX) for k in state_dict):
        return {k[len(CONTROL_PREFIX):]: v for k, v in state_dict.items() if k.startswith(CONTROL_PREFIX)}
    return dict(state_dict)


def is_original_layout(keys: Mapping[str, Any] | set[str]) -> bool:
    """True for an original-layout ControlNet (prefix already stripped)."""
    return "input_hint_block.0.weight" in keys and "zero_convs.0.0.weight" in keys


def is_diffusers_layout(keys: Mapping[str, Any] | set[str]) -> bool:
    """True for a diffusers ControlNetModel state dict."""
    return "controlnet_cond_embedding.conv_in.weight" in keys and "controlnet_down_blocks.0.weight" in keys


def _indices(keys: Any, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def _input_stride(keys: list[str], source: str) -> int:
    """Input blocks per level, downsample included (layers_per_block + 1), from where the downsamples sit."""
    blocks = _indices(keys, r"input_blocks\.(\d+)\.")
    downs = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.")
    if not downs:  # a single level: every block after conv_in is a resnet
        return len(blocks)
    stride = downs[0]
    if downs != [stride * (n + 1) for n in range(len(downs))] or blocks != list(range(blocks[-1] + 1)):
        raise ControlNetFormatError(f"{source}: ControlNet input blocks {blocks} with downsamples at {downs} do not "
                                    "form levels of equal size")
    return stride


def original_to_diffusers(state_dict: Mapping[str, torch.Tensor], source: str = "ControlNet") -> dict[str, torch.Tensor]:
    """Original-layout ControlNet keys (without `control_model.`) -> diffusers ControlNetModel keys."""
    keys = list(state_dict)
    stride = _input_stride(keys, source)
    hint = _indices(keys, r"input_hint_block\.(\d+)\.weight")
    if len(hint) < 2:
        raise ControlNetFormatError(f"{source}: ControlNet hint encoder has {len(hint)} convolutions, needs at least 2")
    mid_attention = "middle_block.1.proj_in.weight" in state_dict
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        out[_key_to_diffusers(key, stride, hint, mid_attention, source)] = value
    return out


def _key_to_diffusers(key: str, stride: int, hint: list[int], mid_attention: bool, source: str) -> str:
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", key):
        i, part, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if i > 0:
            level, r = divmod(i - 1, stride)
            if r == stride - 1 and rest.startswith("op."):
                return f"down_blocks.{level}.downsamplers.0.conv.{rest[3:]}"
            if part == 0:
                return f"down_blocks.{level}.resnets.{r}.{split_first(rest, _RESNET_TO_DIFFUSERS)}"
            return f"down_blocks.{level}.attentions.{r}.{rest}"
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", key):
        n, rest = int(m.group(1)), m.group(2)
        if n == 1 and mid_attention:
            return f"mid_block.attentions.0.{rest}"
        return f"mid_block.resnets.{n // 2 if mid_attention else n}.{split_first(rest, _RESNET_TO_DIFFUSERS)}"
    if m := re.fullmatch(r"zero_convs\.(\d+)\.0\.(weight|bias)", key):
        return f"controlnet_down_blocks.{m.group(1)}.{m.group(2)}"
    if m := re.fullmatch(r"input_hint_block\.(\d+)\.(weight|bias)", key):
        pos = hint.index(int(m.group(1)))
        if pos == 0:
            return f"controlnet_cond_embedding.conv_in.{m.group(2)}"
        if pos == len(hint) - 1:
            return f"controlnet_cond_embedding.conv_out.{m.group(2)}"
        return f"controlnet_cond_embedding.blocks.{pos - 1}.{m.group(2)}"
    renamed = split_first(key, _TOP_TO_DIFFUSERS)
    if renamed != key:
        return renamed
    raise ControlNetFormatError(f"{source}: ControlNet key {key!r} has no place in diffusers' ControlNetModel")


def diffusers_to_original(state_dict: Mapping[str, torch.Tensor], source: str = "ControlNet") -> dict[str, torch.Tensor]:
    """diffusers ControlNetModel keys -> original-layout keys (without `control_model.`)."""
    keys = list(state_dict)
    layers = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
    if layers == 0:
        raise ControlNetFormatError(f"{source}: no 'down_blocks.0.resnets.*' keys; not a diffusers ControlNetModel")
    stride = layers + 1
    blocks = len(_indices(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\."))
    mid_attention = any(k.startswith("mid_block.attentions.") for k in keys)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        out[_key_to_original(key, stride, blocks, mid_attention, source)] = value
    return out


def _key_to_original(key: str, stride: int, blocks: int, mid_attention: bool, source: str) -> str:
    if (encoder := encoder_key_to_ldm(key, stride, mid_attention)) is not None:
        return encoder
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(weight|bias)", key):
        return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(weight|bias)", key):
        return f"input_hint_block.0.{m.group(1)}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(weight|bias)", key):
        return f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{m.group(2)}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(weight|bias)", key):
        return f"input_hint_block.{2 * (blocks + 1)}.{m.group(1)}"
    renamed = split_first(key, _TOP_TO_LDM)
    if renamed != key:
        return renamed
    raise ControlNetFormatError(f"{source}: ControlNet key {key!r} has no place in the original layout")


# ------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class ControlNetSpec:
    """What a ControlNet's diffusers-layout shapes say: its family and its ControlNetModel config."""

    family: str  # sd1 | sd2 | sdxl
    config: dict[str, Any]
    notes: tuple[str, ...] = field(default=())

    @property
    def hint_downscale(self) -> int:
        """How much smaller than the hint image the hint encoder's output is (8 for every released ControlNet)."""
        return 2 ** (len(self.config["conditioning_embedding_out_channels"]) - 1)


def read_controlnet_spec(shapes: Mapping[str, tuple[int, ...]], source: str) -> ControlNetSpec:
    """Family and ControlNetModel config of a diffusers-layout ControlNet, from its shapes."""

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ControlNetFormatError(f"{source}: ControlNet key {key!r} is missing; {detect.describe_keys(shapes)}")
        return tuple(int(d) for d in shapes[key])

    if any(k.startswith("class_embedding.") for k in shapes):
        raise ControlNetFormatError(f"{source}: ControlNet with a class embedding (unCLIP-style); not supported")
    first, in_channels = need("conv_in.weight")[:2]
    time_dim = need("time_embedding.linear_1.weight")[0]
    if time_dim != 4 * first:
        raise ControlNetFormatError(f"{source}: ControlNet time embedding is {time_dim} wide, diffusers' "
                                    f"ControlNetModel needs 4 x {first}")
    levels = _indices(shapes, r"down_blocks\.(\d+)\.")
    if levels != list(range(len(levels))) or not levels:
        raise ControlNetFormatError(f"{source}: ControlNet down blocks {levels} are not 0..n-1")
    widths, attention, depths = [], [], []
    layers: set[int] = set()
    linear: set[bool] = set()
    contexts: set[int] = set()
    for b in levels:
        resnets = _indices(shapes, rf"down_blocks\.{b}\.resnets\.(\d+)\.")
        layers.add(len(resnets))
        widths.append(need(f"down_blocks.{b}.resnets.0.conv1.weight")[0])
        has_attention = f"down_blocks.{b}.attentions.0.proj_in.weight" in shapes
        attention.append(has_attention)
        # Levels without attention get diffusers' default depth of 1, which they never use.
        depth = {len(_indices(shapes, rf"down_blocks\.{b}\.attentions\.{r}\.transformer_blocks\.(\d+)\."))
                 for r in resnets} if has_attention else {1}
        if len(depth) != 1:
            raise ControlNetFormatError(f"{source}: ControlNet level {b} mixes transformer depths {sorted(depth)}")
        depths.append(depth.pop())
    if len(layers) != 1:
        raise ControlNetFormatError(f"{source}: ControlNet levels have {sorted(layers)} resnets; all must match")
    per_level = layers.pop()
    for key, shape in shapes.items():
        if key.endswith(".proj_in.weight"):
            linear.add(len(shape) == 2)
        if key.endswith(".attn2.to_k.weight"):
            contexts.add(int(shape[1]))
    if len(linear) > 1 or len(contexts) > 1:
        raise ControlNetFormatError(f"{source}: ControlNet mixes projection kinds or context widths {sorted(contexts)}")
    mid_attention = "mid_block.attentions.0.proj_in.weight" in shapes
    mid_depth = len(_indices(shapes, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."))
    adm = need("add_embedding.linear_1.weight")[1] if "add_embedding.linear_1.weight" in shapes else None
    use_linear = linear.pop() if linear else False
    family = "sdxl" if adm is not None else ("sd2" if use_linear else "sd1")
    # diffusers' middle block takes the depth of the last level, so a last level without attention carries it.
    if not attention[-1]:
        depths[-1] = mid_depth
    elif mid_attention and depths[-1] != mid_depth:
        raise ControlNetFormatError(f"{source}: ControlNet middle attention depth {mid_depth} differs from the last "
                                    f"level's {depths[-1]}; diffusers' ControlNetModel cannot express that")
    hint_blocks = _indices(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight")
    if len(hint_blocks) % 2:
        raise ControlNetFormatError(f"{source}: ControlNet hint encoder has {len(hint_blocks)} inner convolutions; "
                                    "expected pairs (same width, then stride 2)")
    cond_in = need("controlnet_cond_embedding.conv_in.weight")
    embedding = [cond_in[0]] + [need(f"controlnet_cond_embedding.blocks.{2 * k + 1}.weight")[0]
                                for k in range(len(hint_blocks) // 2)]
    if need("controlnet_cond_embedding.conv_out.weight")[0] != first:
        raise ControlNetFormatError(f"{source}: ControlNet hint encoder ends at "
                                    f"{need('controlnet_cond_embedding.conv_out.weight')[0]} channels, the first "
                                    f"level has {first}")
    zero_convs = len(_indices(shapes, r"controlnet_down_blocks\.(\d+)\."))
    expected = 1 + len(levels) * per_level + len(levels) - 1
    if zero_convs != expected:
        raise ControlNetFormatError(f"{source}: ControlNet has {zero_convs} zero convolutions, its "
                                    f"{len(levels)} levels need {expected}")
    config: dict[str, Any] = {
        "in_channels": in_channels,
        "conditioning_channels": cond_in[1],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_attention else "UNetMidBlock2D",
        "block_out_channels": widths,
        "layers_per_block": per_level,
        "cross_attention_dim": contexts.pop() if contexts else {"sdxl": 2048, "sd2": 1024}.get(family, 768),
        "attention_head_dim": [detect.unet_heads(family, w) for w in widths],
        "use_linear_projection": use_linear,
        "transformer_layers_per_block": depths,
        "norm_num_groups": detect.norm_groups(widths),
        "conditioning_embedding_out_channels": embedding,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }
    if adm is not None:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=detect.SDXL_TIME_EMBED_DIM,
                      projection_class_embeddings_input_dim=adm)
    return ControlNetSpec(family=family, config=config)


# ------------------------------------------------------------------------------------------ loading


@dataclass
class LoadedControlNet:
    """A ControlNetModel built from a file, and what was learnt about the file."""

    module: Any
    spec: ControlNetSpec
    path: str
    layout: str  # original | diffusers
    global_pool: bool = False
    difference: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.spec.family


def _sibling_config(path: Path) -> dict[str, Any] | None:
    """A diffusers ControlNet `config.json` beside a weights file, if there is one."""
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ControlNetFormatError(f"{config_path}: unreadable ControlNet config ({err})") from err
    if not isinstance(config, dict) or "ControlNet" not in str(config.get("_class_name", "")):
        return None
    return config


def _other_kind(keys: set[str]) -> str | None:
    """What a file that is not a ControlNet holds, when it is a known relative of one."""
    if any(k.startswith("lora_controlnet") for k in keys):
        return "a Control-LoRA (lora_controlnet key), not a full ControlNet; Control-LoRAs are not supported"
    if any(k.startswith(("adapter.", "body.0.")) for k in keys):
        return "a T2I-Adapter, not a ControlNet; T2I-Adapters are not supported"
    return None


BaseUNet = Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]]


def controlnet_state_dict(raw: Mapping[str, torch.Tensor], source: str, *,
                          base_unet: BaseUNet | None = None) -> tuple[dict[str, torch.Tensor], str, bool]:
    """A ControlNet file's tensors in diffusers layout, the layout it came in, and whether it was a difference file.

    `base_unet` (LDM UNet keys without `model.diffusion_model.`, or a function giving them, called
    only for a difference file) is added to a difference ControlNet's encoder weights, as
    DiffControlNetLoader does.
    """
    difference = DIFFERENCE_KEY in raw
    state = strip_control_prefix({k: v for k, v in raw.items() if k != DIFFERENCE_KEY})
    keys = set(state)
    if is_diffusers_layout(keys):
        layout = "diffusers"
        if difference:
            raise ControlNetFormatError(f"{source}: a difference ControlNet in diffusers layout; only the original "
                                        "layout is supported for difference files")
    elif is_original_layout(keys):
        layout = "original"
        if difference:
            if base_unet is None:
                raise ControlNetFormatError(f"{source}: a difference ControlNet (it stores changes to a base "
                                            "model's weights); load it with DiffControlNetLoader and its model")
            state = add_base_unet(state, base_unet() if callable(base_unet) else base_unet, source)
        state = original_to_diffusers(state, source)
    else:
        kind = _other_kind(keys)
        if kind is not None:
            raise ControlNetFormatError(f"{source}: {kind}")
        raise ControlNetFormatError(f"{source}: not a ControlNet (no control_model.input_hint_block.0.weight and no "
                                    f"controlnet_cond_embedding.conv_in.weight); {detect.describe_keys(state)}")
    return state, layout, difference


def add_base_unet(state: Mapping[str, torch.Tensor], base_unet: Mapping[str, torch.Tensor],
                  source: str) -> dict[str, torch.Tensor]:
    """Add the base UNet's weights to a difference ControlNet's encoder weights (original layout)."""
    out = dict(state)
    added = 0
    for key, value in state.items():
        if key.startswith(UNET_PARTS) and key in base_unet:
            base = base_unet[key]
            if tuple(base.shape) != tuple(value.shape):
                raise ControlNetFormatError(f"{source}: difference weight {key!r} has shape {tuple(value.shape)}, the "
                                            f"model's is {tuple(base.shape)}; the ControlNet was made for another model")
            out[key] = (value.float() + base.float().to(value.device)).to(value.dtype)
            added += 1
    if not added:
        raise ControlNetFormatError(f"{source}: no weight of the difference ControlNet matches the model's UNet")
    return out


def global_pool_by_name(path: str) -> bool:
    """ComfyUI's rule: ControlNets named `*_shuffle` (or `*_shuffle_fp16`) pool their outputs globally."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.endswith(("_shuffle", "_shuffle_fp16"))


def load_controlnet_file(path: str | os.PathLike[str], *, dtype: torch.dtype | None = None,
                         device: torch.device | str | None = None,
                         base_unet: BaseUNet | None = None) -> LoadedControlNet:
    """Load a ControlNet file (either layout; a diffusers folder's weights file uses its config.json) offline."""
    from diffusers import ControlNetModel  # noqa: PLC0415

    from nodes.models.checkpoint import read_state_dict  # noqa: PLC0415
    from nodes.models.convert import materialize  # noqa: PLC0415

    path = Path(path)
    source = str(path)
    if path.is_dir():
        weights = [path / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
                   if (path / n).is_file()]
        if not weights:
            raise ControlNetFormatError(f"{source}: a folder without diffusion_pytorch_model.safetensors")
        path = weights[0]
    raw, metadata = read_state_dict(path)
    state, layout, difference = controlnet_state_dict(raw, source, base_unet=base_unet)
    spec = read_controlnet_spec({k: tuple(v.shape) for k, v in state.items()}, source)
    config = dict(spec.config)
    notes: list[str] = []
    folder_config = _sibling_config(path) if layout == "diffusers" else None
    if folder_config is not None:
        # The folder's config knows what shapes cannot (heads, upcasting, pooling); shapes still must agree.
        known = set(ControlNetModel.extract_init_dict(folder_config)[0])
        config.update({k: v for k, v in folder_config.items() if k in known})
        notes.append(f"configuration from {path.parent / 'config.json'}")
    if global_pool_by_name(source) and not config.get("global_pool_conditions"):
        config["global_pool_conditions"] = True
        notes.append("global average pooling (a *_shuffle ControlNet)")
    spec = ControlNetSpec(spec.family, config, tuple(notes))
    dtype = dtype or devices.compute_dtype()
    device = torch.device(device) if device is not None else devices.offload_device()
    module, unused = materialize(lambda: ControlNetModel(**config), state, dtype=dtype, device=device,
                                 source=source, what="ControlNet")
    if unused:
        raise ControlNetFormatError(f"{source}: {len(unused)} ControlNet weights have no place in the model read "
                                    f"from the file, e.g. {unused[:4]}")
    return LoadedControlNet(module, spec, source, layout, bool(config.get("global_pool_conditions")), difference,
                            metadata)


# ------------------------------------------------------------------------------------------- saving


def save_controlnet(controlnet: torch.nn.Module, path: str | os.PathLike[str], *, layout: str = "original",
                    dtype: torch.dtype | None = None, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a diffusers ControlNetModel as one `.safetensors` file (original layout with `control_model.`, or diffusers)."""
    state = controlnet.state_dict()
    if layout == "original":
        state = {CONTROL_PREFIX + k: v for k, v in diffusers_to_original(state).items()}
    elif layout != "diffusers":
        raise ValueError(f"save_controlnet: layout {layout!r} is not 'original' or 'diffusers'")
    meta = {"format": "pt"}
    meta.update(metadata or {})
    return save_state_dict(state, path, dtype=dtype, metadata=meta)


def write_controlnet_folder(controlnet: Any, folder: str | os.PathLike[str]) -> Path:
    """Write a diffusers ControlNet folder (config.json + diffusion_pytorch_model.safetensors)."""
    from nodes.models.convert import quiet_progress  # noqa: PLC0415

    folder = Path(folder)
    with quiet_progress():
        controlnet.save_pretrained(folder, safe_serialization=True)
    return folder
