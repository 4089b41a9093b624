"""Conditioning nodes build new lists with the right extras and never touch their inputs."""
from __future__ import annotations

import torch

from nodes import conditioning as C


def cond(value: float, tokens: int = 77, pooled: bool = True) -> list[list]:
    extras = {"pooled_output": torch.full((1, 8), value)} if pooled else {}
    return [[torch.full((1, tokens, 8), value), extras]]


def test_combine_and_concat() -> None:
    a, b = cond(1.0), cond(2.0)
    assert len(C.ConditioningCombine(conditioning_1=a, conditioning_2=b)) == 2
    cat = C.ConditioningConcat(conditioning_to=a, conditioning_from=b)
    assert cat[0][0].shape == (1, 154, 8) and cat[0][0][0, 100, 0] == 2.0
    assert a[0][0].shape == (1, 77, 8)


def test_average_blends_and_pads() -> None:
    out = C.ConditioningAverage(conditioning_to=cond(1.0, 154), conditioning_from=cond(3.0, 77),
                                conditioning_to_strength=0.25)
    assert torch.allclose(out[0][0][0, 0], torch.full((8,), 2.5))
    assert torch.allclose(out[0][0][0, 100], torch.full((8,), 0.25))  # padded with zeros
    assert torch.allclose(out[0][1]["pooled_output"], torch.full((1, 8), 2.5))


def test_area_mask_timestep_and_zero_out() -> None:
    base = cond(1.0)
    area = C.ConditioningSetArea(conditioning=base, width=128, height=64, x=16, y=8, strength=0.5)
    assert area[0][1]["area"] == (8, 16, 1, 2) and area[0][1]["strength"] == 0.5
    assert "area" not in base[0][1]
    masked = C.ConditioningSetMask(conditioning=base, mask=torch.ones(8, 8), strength=0.7, set_cond_area="mask bounds")
    assert masked[0][1]["mask"].shape == (1, 8, 8) and masked[0][1]["set_area_to_bounds"] is True
    ranged = C.ConditioningSetTimestepRange(conditioning=base, start=0.2, end=0.6)
    assert (ranged[0][1]["start_percent"], ranged[0][1]["end_percent"]) == (0.2, 0.6)
    zero = C.ConditioningZeroOut(conditioning=base)
    assert not zero[0][0].any() and not zero[0][1]["pooled_output"].any() and base[0][0].all()
