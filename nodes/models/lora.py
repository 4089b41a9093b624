"""LoRA files: read the common layouts, map their keys onto our modules, apply as patches to clones.

Layouts understood:
* kohya (`lora_unet_<module>`, `lora_te_`/`lora_te1_`/`lora_te2_<module>` with `.lora_down.weight`,
  `.lora_up.weight`, `.alpha`), with UNet module names in diffusers form (SD1 trainers) or in
  the original LDM form (`input_blocks_4_1_...`, SDXL trainers);
* diffusers / PEFT (`unet.<module>.lora_A.weight` / `.lora_B.weight`, `text_encoder.` and
  `text_encoder_2.`, the older `.lora.down.weight` and attention-processor `to_q_lora` forms);
* ComfyUI's own naming (`diffusion_model.<LDM module>`, `text_encoders.clip_l.transformer.<module>`);
* whole-weight differences (`.diff`, `.diff_b`).
The UNet's LDM names are derived from its diffusers config, so no table has to be kept in step.
Keys that match nothing, and layouts we do not apply (LoHa, LoKr, DoRA, Tucker mid weights), are
counted and reported, never dropped silently.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nodes import device as devices
from nodes.models.safe_pickle import load_torch_file
from nodes.models.wrappers import ClipWrapper, FullDelta, LowRankDelta, ModelWrapper, WeightDelta
from nodes.text.roles import encoder_roles

__all__ = ["LoraPatches", "load_lora_file", "lora_patches", "apply_lora", "unet_ldm_module_names"]

log = logging.getLogger(__name__)

# (suffix, role) — the longest matching suffix wins, so order does not matter.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"), (".alpha", "alpha"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
    (".diff", "diff"), (".diff_b", "diff_b"), (".dora_scale", "unsupported"),
    (".hada_w1_a", "unsupported"), (".hada_w1_b", "unsupported"), (".hada_w2_a", "unsupported"),
    (".hada_w2_b", "unsupported"), (".hada_t1", "unsupported"), (".hada_t2", "unsupported"),
    (".lokr_w1", "unsupported"), (".lokr_w2", "unsupported"), (".lokr_w1_a", "unsupported"),
    (".lokr_w1_b", "unsupported"), (".lokr_w2_a", "unsupported"), (".lokr_w2_b", "unsupported"),
    (".lokr_t2", "unsupported"),
)
_SUFFIXES_BY_LENGTH = sorted(_SUFFIXES, key=lambda s: -len(s[0]))


@dataclass
class LoraPatches:
    """A LoRA mapped onto one MODEL and one CLIP: per-parameter deltas and what did not map."""

    model: dict[str, WeightDelta] = field(default_factory=dict)
    clip: dict[str, WeightDelta] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # meant for a part that was not given (no CLIP)
    total_keys: int = 0

    def summary(self) -> str:
        return (f"{len(self.model)} UNet and {len(self.clip)} text-encoder weights patched; "
                f"{len(self.unmatched)} keys matched nothing, {len(self.unsupported)} use an unsupported layout, "
                f"{len(self.skipped)} were for a part not given")


def load_lora_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file (.safetensors, or a pickle through torch's weights-only loader)."""
    path = os.fspath(path)
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(path, device=str(devices.offload_device()))
    data = load_torch_file(path)  # weights-only unpickling; refuses files that would run code
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise ValueError(f"LoRA file {path!r} holds a {type(data).__name__}, not a mapping of tensors")
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


# ----- UNet: diffusers module names <-> original LDM names -------------------------------------------
_RESNET_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _per_block(value: Any, n: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n


def unet_ldm_module_names(module_names: list[str], config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers UNet2DConditionModel module name -> its name in the original (LDM/SGM) UNet."""
    down_types = list(config.get("down_block_types", ()))
    up_types = list(config.get("up_block_types", ()))
    layers = _per_block(config.get("layers_per_block", 2), len(down_types))
    up_layers = [n + 1 for n in reversed(layers)]
    down_first = [1 + sum(n + 1 for n in layers[:i]) for i in range(len(layers))]
    up_first = [sum(up_layers[:i]) for i in range(len(up_layers))]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out: dict[str, str] = {}
    for name in module_names:
        if name in fixed:
            out[name] = fixed[name]
            continue
        p = name.split(".")
        ldm: str | None = None
        try:
            if p[0] == "down_blocks" and p[2] == "resnets" and p[4] in _RESNET_LDM:
                ldm = f"input_blocks.{down_first[int(p[1])] + int(p[3])}.0.{_RESNET_LDM[p[4]]}"
            elif p[0] == "down_blocks" and p[2] == "attentions":
                ldm = f"input_blocks.{down_first[int(p[1])] + int(p[3])}.1." + ".".join(p[4:])
            elif p[0] == "down_blocks" and p[2] == "downsamplers" and p[4] == "conv":
                ldm = f"input_blocks.{down_first[int(p[1])] + layers[int(p[1])]}.0.op"
            elif p[0] == "mid_block" and p[1] == "resnets" and p[3] in _RESNET_LDM:
                ldm = f"middle_block.{2 * int(p[2])}.{_RESNET_LDM[p[3]]}"
            elif p[0] == "mid_block" and p[1] == "attentions":
                ldm = "middle_block.1." + ".".join(p[3:])
            elif p[0] == "up_blocks" and p[2] == "resnets" and p[4] in _RESNET_LDM:
                ldm = f"output_blocks.{up_first[int(p[1])] + int(p[3])}.0.{_RESNET_LDM[p[4]]}"
            elif p[0] == "up_blocks" and p[2] == "attentions":
                ldm = f"output_blocks.{up_first[int(p[1])] + int(p[3])}.1." + ".".join(p[4:])
            elif p[0] == "up_blocks" and p[2] == "upsamplers" and p[4] == "conv":
                i = int(p[1])
                has_attn = "CrossAttn" in up_types[i] if i < len(up_types) else False
                ldm = f"output_blocks.{up_first[i] + up_layers[i] - 1}.{2 if has_attn else 1}.conv"
        except (IndexError, ValueError):
            ldm = None
        if ldm is not None:
            out[name] = ldm
    return out


# ----- key resolution ------------------------------------------------------------------------------
def _modules_of(param_shapes: Mapping[str, torch.Size]) -> dict[str, torch.Size]:
    """Module name -> weight shape, for every module with a weight."""
    return {k[: -len(".weight")]: s for k, s in param_shapes.items() if k.endswith(".weight")}


@dataclass
class _Targets:
    """Lookup tables from the names a LoRA may use to our parameter keys (without .weight)."""

    unet_dotted: dict[str, str] = field(default_factory=dict)
    unet_underscored: dict[str, str] = field(default_factory=dict)
    clip_dotted: dict[tuple[int, str], str] = field(default_factory=dict)
    clip_underscored: dict[tuple[int, str], str] = field(default_factory=dict)
    role_index: dict[str, int] = field(default_factory=dict)


def _targets(model: ModelWrapper | None, clip: ClipWrapper | None) -> _Targets:
    t = _Targets()
    if model is not None:
        modules = _modules_of(model.slot.param_shapes)
        for name in modules:
            t.unet_dotted[name] = name
            t.unet_underscored[name.replace(".", "_")] = name
        for name, ldm in unet_ldm_module_names(list(modules), model.unet_config).items():
            t.unet_dotted.setdefault(ldm, name)
            t.unet_underscored.setdefault(ldm.replace(".", "_"), name)
    if clip is not None:
        t.role_index = {role.name: i for i, role in enumerate(encoder_roles(clip))}
        for name in _modules_of(clip.slot.param_shapes):
            idx_str, _, inner = name.partition(".")
            idx = int(idx_str)
            # transformers 5 flattened CLIPTextModel (no `text_model.`); LoRAs always say text_model.
            bare = inner[len("text_model."):] if inner.startswith("text_model.") else inner
            for alias in (bare, "text_model." + bare):
                t.clip_dotted[(idx, alias)] = name
                t.clip_underscored[(idx, alias.replace(".", "_"))] = name
    return t


def _split_suffix(key: str) -> tuple[str, str] | None:
    for suffix, role in _SUFFIXES_BY_LENGTH:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)$")


_TE_UNDERSCORED = (("lora_te1_", 0), ("lora_te2_", 1), ("lora_te_", 0))
_TE_DOTTED = (("text_encoder_2.", 1), ("text_encoder.", 0))
_UNET_DOTTED_PREFIXES = ("unet.", "model.diffusion_model.", "diffusion_model.")


def _resolve(module_key: str, t: _Targets) -> tuple[str, str | None]:
    """('unet' or 'clip', our module name, or None when nothing of that part matches)."""
    m = _PROCESSOR.search(module_key)
    if m:  # old diffusers attention-processor LoRAs: attn1.processor.to_q_lora
        module_key = module_key[: m.start()] + "." + m.group(1) + (".0" if m.group(1) == "to_out" else "")
    for prefix, idx in _TE_UNDERSCORED:
        if module_key.startswith(prefix):
            return "clip", t.clip_underscored.get((idx, module_key[len(prefix):]))
    for prefix, idx in _TE_DOTTED:
        if module_key.startswith(prefix):
            return "clip", t.clip_dotted.get((idx, module_key[len(prefix):]))
    if module_key.startswith("text_encoders."):  # ComfyUI's own naming: text_encoders.clip_l.transformer.<module>
        role, _, rest = module_key[len("text_encoders."):].partition(".")
        rest = rest[len("transformer."):] if rest.startswith("transformer.") else rest
        idx = t.role_index.get(role)
        return "clip", t.clip_dotted.get((idx, rest)) if idx is not None else None
    if module_key.startswith("lora_unet_"):
        return "unet", t.unet_underscored.get(module_key[len("lora_unet_"):])
    for prefix in _UNET_DOTTED_PREFIXES:
        if module_key.startswith(prefix):
            module_key = module_key[len(prefix):]
            break
    return "unet", t.unet_dotted.get(module_key)


def lora_patches(lora: Mapping[str, torch.Tensor], model: ModelWrapper | None,
                 clip: ClipWrapper | None) -> LoraPatches:
    """Map a LoRA state dict onto `model` and `clip` (either may be None)."""
    t = _targets(model, clip)
    result = LoraPatches(total_keys=len(lora))
    groups: dict[str, dict[str, str]] = {}
    for key in lora:
        split = _split_suffix(key)
        if split is None:
            result.unmatched.append(key)
            continue
        module_key, role = split
        if role == "unsupported":
            result.unsupported.append(key)
            continue
        groups.setdefault(module_key, {})[role] = key
    model_shapes = model.slot.param_shapes if model is not None else {}
    clip_shapes = clip.slot.param_shapes if clip is not None else {}
    for module_key, roles in groups.items():
        keys = list(roles.values())
        if "mid" in roles:
            result.unsupported.extend(keys)
            continue
        part, name = _resolve(module_key, t)
        if (part == "clip" and clip is None) or (part == "unet" and model is None):
            result.skipped.extend(keys)
            continue
        if name is None:
            result.unmatched.extend(keys)
            continue
        into, shapes = (result.model, model_shapes) if part == "unet" else (result.clip, clip_shapes)
        leftover = set(keys)
        if "down" in roles and "up" in roles:
            down, up = lora[roles["down"]], lora[roles["up"]]
            rank = down.shape[0]
            alpha = float(lora[roles["alpha"]].item()) if "alpha" in roles else float(rank)
            delta = LowRankDelta(up=up, down=down, scale=alpha / rank)
            shape = shapes.get(name + ".weight")
            if shape is not None and delta.fits(shape):
                into[name + ".weight"] = delta
                leftover -= {roles["down"], roles["up"], roles.get("alpha", "")}
        if "diff" in roles and FullDelta(lora[roles["diff"]]).fits(shapes.get(name + ".weight", torch.Size())):
            into[name + ".weight"] = FullDelta(lora[roles["diff"]])
            leftover.discard(roles["diff"])
        if "diff_b" in roles and FullDelta(lora[roles["diff_b"]]).fits(shapes.get(name + ".bias", torch.Size())):
            into[name + ".bias"] = FullDelta(lora[roles["diff_b"]])
            leftover.discard(roles["diff_b"])
        result.unmatched.extend(sorted(leftover))  # incomplete pairs or shapes that do not fit
    return result


def apply_lora(model: ModelWrapper | None, clip: ClipWrapper | None,
               lora: Mapping[str, torch.Tensor] | str | os.PathLike[str], strength_model: float = 1.0,
               strength_clip: float = 1.0, *, name: str = "") -> tuple[ModelWrapper | None, ClipWrapper | None]:
    """LoraLoader: clones of `model` and `clip` carrying the LoRA at the given strengths (inputs untouched).

    LoraLoaderModelOnly is `apply_lora(model, None, lora, strength)`. A strength of 0 returns that
    input as it is. Keys that match nothing are counted in a warning.
    """
    if not isinstance(lora, Mapping):
        name = name or os.path.basename(os.fspath(lora))
        lora = load_lora_file(lora)
    label = name or "LoRA"
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    patches = lora_patches(lora, model if strength_model != 0 else None, clip if strength_clip != 0 else None)
    if strength_model == 0 or strength_clip == 0:
        patches.skipped.clear()  # switched off on purpose, not a mismatch
    bad = patches.unmatched + patches.unsupported
    if bad:
        log.warning("%s: %d of %d keys were not applied (%d match no module, %d unsupported layout), e.g. %s",
                    label, len(bad), patches.total_keys, len(patches.unmatched), len(patches.unsupported),
                    ", ".join(bad[:5]))
    if patches.skipped:
        log.info("%s: %d keys for a part not given were skipped", label, len(patches.skipped))
    new_model = model.with_patches(patches.model, strength_model) if model is not None and strength_model != 0 else model
    new_clip = clip.with_patches(patches.clip, strength_clip) if clip is not None and strength_clip != 0 else clip
    return new_model, new_clip
