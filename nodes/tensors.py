"""Tensor helpers shared by the image and latent nodes: resizing, cropping, batching, PIL conversion."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def center_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B,C,H,W] to the aspect ratio of width x height, around the centre (ComfyUI's `center`)."""
    h, w = x.shape[-2], x.shape[-1]
    old_aspect, new_aspect = w / h, width / height
    if old_aspect > new_aspect:
        cut = round((w - w * (new_aspect / old_aspect)) / 2)
        return x[..., :, cut:w - cut] if cut > 0 else x
    if old_aspect < new_aspect:
        cut = round((h - h * (old_aspect / new_aspect)) / 2)
        return x[..., cut:h - cut, :] if cut > 0 else x
    return x


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1), magnitudes interpolated linearly."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    dot = (ua * ub).sum(dim=1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) / so) * ua + (torch.sin(t * omega) / so) * ub
    linear = (1 - t) * ua + t * ub
    direction = torch.where(so.abs() < 1e-4, linear, direction)
    return direction * ((1 - t) * na + t * nb)


def _bislerp_axis(x: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    old = x.shape[axis]
    pos = (torch.arange(size, dtype=torch.float32) + 0.5) * old / size - 0.5
    pos = pos.clamp(0, old - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=old - 1)
    t = (pos - lo.float())
    shape = [1] * x.ndim
    shape[axis] = size
    t = t.view(shape).to(x.dtype)
    return _slerp(x.index_select(axis, lo), x.index_select(axis, hi), t)


def bislerp(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [B,C,H,W] by slerping channel vectors along each axis (keeps latent norms from shrinking)."""
    return _bislerp_axis(_bislerp_axis(x.float(), height, 2), width, 3).to(x.dtype)


def resize_latent(x: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """Resize [B,C,H,W] to width x height (latent units) with one of ComfyUI's latent methods."""
    if crop == "center":
        x = center_crop(x, width, height)
    if method == "bislerp":
        return bislerp(x, width, height)
    return resize_bchw(x, width, height, method)


def resize_bchw(x: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    """Resize [B,C,H,W]; `lanczos` goes through PIL, the rest through torch."""
    if method == "lanczos":
        return _lanczos(x, width, height)
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic",
            "nearest": "nearest"}.get(method)
    if mode is None:
        raise ValueError(f"upscale method {method!r} is not supported")
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x.float(), size=(height, width), mode=mode, **kwargs).to(x.dtype)


def _lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    out = []
    for sample in x:
        channels = [Image.fromarray(c.float().cpu().numpy(), mode="F").resize((width, height), Image.Resampling.LANCZOS)
                    for c in sample]
        out.append(torch.from_numpy(np.stack([np.asarray(c) for c in channels])))
    return torch.stack(out).to(x.dtype)


def image_to_pil(image: torch.Tensor) -> Image.Image:
    """One [H,W,C] float 0..1 image to an 8-bit PIL image."""
    array = np.clip(image.detach().float().cpu().numpy() * 255.0, 0, 255).round().astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def pil_to_image(img: Image.Image) -> torch.Tensor:
    """A PIL image to a [H,W,3] float tensor in 0..1."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)


def mask_to_bchw(mask: torch.Tensor) -> torch.Tensor:
    """A MASK ([H,W] or [B,H,W]) as [B,1,H,W]."""
    return mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
