"""Conditioning nodes: combine, concatenate, average, restrict to areas, masks or step ranges.

CONDITIONING is a list of `[embedding [1, tokens, dim], extras]`; these nodes return new lists and
never change the tensors they were given (the cache may hold them).
"""
from __future__ import annotations

from typing import Any

import torch

from graph.declare import Combo, Float, In, Int, node
from graph.schema import MAX_RESOLUTION

Conditioning = list[list[Any]]


def _with(conditioning: Conditioning, **extras: Any) -> Conditioning:
    return [[cond, {**options, **extras}] for cond, options in conditioning]


@node(category="conditioning", outputs="CONDITIONING", display_name="Conditioning (Combine)")
def ConditioningCombine(conditioning_1: Conditioning = In("CONDITIONING"),
                        conditioning_2: Conditioning = In("CONDITIONING")) -> Conditioning:
    """Use both conditionings: the sampler averages their predictions."""
    return conditioning_1 + conditioning_2


@node(category="conditioning", outputs="CONDITIONING", display_name="Conditioning (Concat)")
def ConditioningConcat(conditioning_to: Conditioning = In("CONDITIONING"),
                       conditioning_from: Conditioning = In("CONDITIONING")) -> Conditioning:
    """Append the first embedding of `from` to every embedding of `to` along the token axis."""
    extra = conditioning_from[0][0]
    return [[torch.cat((cond, extra.to(cond.dtype)), dim=1), dict(options)] for cond, options in conditioning_to]


@node(category="conditioning", outputs="CONDITIONING", display_name="Conditioning (Average)")
def ConditioningAverage(conditioning_to: Conditioning = In("CONDITIONING"),
                        conditioning_from: Conditioning = In("CONDITIONING"),
                        conditioning_to_strength: float = Float(1.0, min=0.0, max=1.0, step=0.01)) -> Conditioning:
    """Blend `to` with the first embedding of `from`: to*strength + from*(1-strength)."""
    source = conditioning_from[0][0]
    source_pooled = conditioning_from[0][1].get("pooled_output")
    w = conditioning_to_strength
    out = []
    for cond, options in conditioning_to:
        other = source[:, :cond.shape[1]]
        if other.shape[1] < cond.shape[1]:  # pad a shorter prompt with zeros, as ComfyUI does
            other = torch.cat([other, torch.zeros((1, cond.shape[1] - other.shape[1], cond.shape[2]))], dim=1)
        options = dict(options)
        pooled = options.get("pooled_output")
        if pooled is not None and source_pooled is not None:
            options["pooled_output"] = pooled * w + source_pooled * (1.0 - w)
        elif source_pooled is not None:
            options["pooled_output"] = source_pooled
        out.append([cond * w + other * (1.0 - w), options])
    return out


@node(category="conditioning", outputs="CONDITIONING", display_name="Conditioning (Set Area)")
def ConditioningSetArea(conditioning: Conditioning = In("CONDITIONING"),
                        width: int = Int(64, min=64, max=MAX_RESOLUTION, step=8),
                        height: int = Int(64, min=64, max=MAX_RESOLUTION, step=8),
                        x: int = Int(0, min=0, max=MAX_RESOLUTION, step=8),
                        y: int = Int(0, min=0, max=MAX_RESOLUTION, step=8),
                        strength: float = Float(1.0, min=0.0, max=10.0, step=0.01)) -> Conditioning:
    """Apply this conditioning only inside a rectangle (pixels; stored in latent units)."""
    return _with(conditioning, area=(height // 8, width // 8, y // 8, x // 8), strength=strength,
                 set_area_to_bounds=False)


@node(category="conditioning", outputs="CONDITIONING", display_name="Conditioning (Set Mask)")
def ConditioningSetMask(conditioning: Conditioning = In("CONDITIONING"), mask: torch.Tensor = In("MASK"),
                        strength: float = Float(1.0, min=0.0, max=10.0, step=0.01),
                        set_cond_area: str = Combo(["default", "mask bounds"])) -> Conditioning:
    """Apply this conditioning only where the mask is set."""
    mask = mask.unsqueeze(0) if mask.ndim < 3 else mask
    return _with(conditioning, mask=mask, set_area_to_bounds=set_cond_area != "default", mask_strength=strength)


@node(category="advanced/conditioning", outputs="CONDITIONING")
def ConditioningSetTimestepRange(conditioning: Conditioning = In("CONDITIONING"),
                                 start: float = Float(0.0, min=0.0, max=1.0, step=0.001),
                                 end: float = Float(1.0, min=0.0, max=1.0, step=0.001)) -> Conditioning:
    """Apply this conditioning only between two fractions of the sampling (0 = first step)."""
    return _with(conditioning, start_percent=start, end_percent=end)


@node(category="advanced/conditioning", outputs="CONDITIONING")
def ConditioningZeroOut(conditioning: Conditioning = In("CONDITIONING")) -> Conditioning:
    """Replace the embeddings (and pooled outputs) by zeros."""
    out = []
    for cond, options in conditioning:
        options = dict(options)
        if options.get("pooled_output") is not None:
            options["pooled_output"] = torch.zeros_like(options["pooled_output"])
        out.append([torch.zeros_like(cond), options])
    return out
