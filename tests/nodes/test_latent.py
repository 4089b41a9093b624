"""Latent nodes: shapes, batch slicing, masks, resizing."""
from __future__ import annotations

import torch

from nodes import latent as L
from nodes.tensors import bislerp


def test_empty_latent_is_zeros_at_one_eighth() -> None:
    out = L.EmptyLatentImage(width=64, height=48, batch_size=3)
    assert out["samples"].shape == (3, 4, 6, 8) and not out["samples"].any()


def test_upscale_keeps_aspect_when_one_side_is_zero() -> None:
    lat = {"samples": torch.randn(1, 4, 6, 8)}
    assert L.LatentUpscale(samples=lat, upscale_method="nearest-exact", width=128, height=0,
                           crop="disabled")["samples"].shape == (1, 4, 12, 16)
    assert L.LatentUpscale(samples=lat, upscale_method="bilinear", width=0, height=0,
                           crop="disabled")["samples"] is lat["samples"]
    centre = L.LatentUpscale(samples=lat, upscale_method="area", width=64, height=64, crop="center")
    assert centre["samples"].shape == (1, 4, 8, 8)
    assert L.LatentUpscaleBy(samples=lat, upscale_method="bicubic", scale_by=0.5)["samples"].shape == (1, 4, 3, 4)


def test_bislerp_keeps_vector_norms_and_identity() -> None:
    x = torch.randn(2, 4, 5, 7)
    assert torch.allclose(bislerp(x, 7, 5), x, atol=1e-5)
    up = bislerp(x, 14, 10)
    norms = up.norm(dim=1)
    assert norms.min() >= x.norm(dim=1).min() * 0.99  # slerp does not shrink vectors like lerp does


def test_latent_from_batch_slices_samples_masks_and_indices() -> None:
    lat = {"samples": torch.arange(5.0).view(5, 1, 1, 1).expand(5, 4, 2, 2).clone(),
           "noise_mask": torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 2, 2).clone()}
    out = L.LatentFromBatch(samples=lat, batch_index=3, length=4)
    assert out["samples"][:, 0, 0, 0].tolist() == [3.0, 4.0]
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [3.0, 4.0]
    assert out["batch_index"] == [3, 4]


def test_repeat_latent_batch() -> None:
    lat = {"samples": torch.randn(2, 4, 2, 2), "batch_index": [0, 1]}
    out = L.RepeatLatentBatch(samples=lat, amount=3)
    assert out["samples"].shape == (6, 4, 2, 2) and out["batch_index"] == [0, 1, 2, 3, 4, 5]
    assert torch.equal(out["samples"][4], lat["samples"][0])


def test_set_noise_mask_reshapes() -> None:
    out = L.SetLatentNoiseMask(samples={"samples": torch.zeros(1, 4, 2, 2)}, mask=torch.ones(16, 16))
    assert out["noise_mask"].shape == (1, 1, 16, 16)


def test_latent_channels_fit() -> None:
    assert L.latent_channels_fit(torch.zeros(1, 4, 2, 2), 9).shape == (1, 9, 2, 2)
    try:
        L.latent_channels_fit(torch.ones(1, 4, 2, 2), 9)
    except ValueError as exc:
        assert "has 4 channels but the model expects 9" in str(exc)
    else:
        raise AssertionError("a non-empty latent of the wrong size must be refused")
