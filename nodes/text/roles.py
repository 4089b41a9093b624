"""Which text encoder plays which part in a family, and which of its layers conditions the UNet.

ComfyUI's choices, which diffusers' pipelines match:
* SD1 (CLIP-L): last layer after the final layer norm; clip skip takes an earlier hidden state and
  still applies the final layer norm.
* SD2 (OpenCLIP-H): penultimate layer of the 24, with the final layer norm. diffusers-converted
  encoders hold only 23 layers (the last one dropped), where that is the last layer.
* SDXL (CLIP-L + OpenCLIP-G) and its refiner (G only): penultimate layer without the final layer
  norm; the pooled (projected) output comes from G.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nodes.models.wrappers import ClipWrapper, EncoderInfo

__all__ = ["EncoderRole", "encoder_roles", "resolve_layer", "COMFY_KEYS"]

log = logging.getLogger(__name__)

# Our encoder names -> the keys ComfyUI's token dicts use.
COMFY_KEYS = {"clip_l": "l", "clip_g": "g", "clip_h": "h"}


@dataclass(frozen=True)
class EncoderRole:
    """One encoder's part: its name, default output layer, whether that layer gets the final norm."""

    name: str
    default_layer: int
    norm_hidden: bool
    full_layers: int | None = None  # layer count of the original encoder when ours was truncated


_FAMILY_ROLES: dict[str, tuple[EncoderRole, ...]] = {
    "sd1": (EncoderRole("clip_l", -1, True),),
    "sd2": (EncoderRole("clip_h", -2, True),),
    "sdxl": (EncoderRole("clip_l", -2, False), EncoderRole("clip_g", -2, False)),
    "sdxl_refiner": (EncoderRole("clip_g", -2, False),),
}


def encoder_roles(clip: ClipWrapper) -> tuple[EncoderRole, ...]:
    """The roles of `clip`'s encoders, in order: the loader's word where it gave one, else the family's."""
    n = len(clip.encoders)
    table = _FAMILY_ROLES.get(clip.family)
    if table is None or len(table) != n:
        # unknown family: one encoder behaves like SD1, two like SDXL
        table = {1: _FAMILY_ROLES["sd1"], 2: _FAMILY_ROLES["sdxl"]}.get(n)  # type: ignore[assignment]
        if table is None:
            raise ValueError(f"CLIP of family {clip.family!r} has {n} text encoders; only one or two are supported")
    known = {(fam, r.name): r for fam, rs in _FAMILY_ROLES.items() for r in rs}
    out = []
    for slot_role, info in zip(table, clip.encoders):
        name = info.role or slot_role.name
        role = known.get((clip.family, name)) or EncoderRole(name, slot_role.default_layer, slot_role.norm_hidden)
        if info.default_layer is not None or info.final_norm is not None:
            role = EncoderRole(name, info.default_layer if info.default_layer is not None else role.default_layer,
                               info.final_norm if info.final_norm is not None else role.norm_hidden)
        if name == "clip_h" and info.num_layers == 23:
            role = EncoderRole(name, role.default_layer, role.norm_hidden, full_layers=24)
        out.append(role)
    return tuple(out)


def resolve_layer(role: EncoderRole, info: EncoderInfo, layer_idx: int | None) -> int | None:
    """Index into our encoder's hidden states for `layer_idx` (counted on the original encoder).

    Returns None for "the last layer after the final norm" (the encoder's own output).
    """
    layer = role.default_layer if layer_idx is None else layer_idx
    total = role.full_layers or info.num_layers
    if layer >= 0 or -layer > total:
        # ComfyUI then uses the encoder's own output (last layer, final norm applied)
        log.warning("CLIP layer %d is outside -1..-%d of %s; using the last layer", layer, total, role.name)
        return None
    dropped = total - info.num_layers
    ours = layer + dropped  # -2 on the 24-layer original is -1 on a 23-layer copy
    if ours >= 0:
        log.warning("CLIP layer %d of %s was removed from this encoder; using its last layer", layer, role.name)
        ours = -1
    return None if ours == -1 and role.norm_hidden else ours
