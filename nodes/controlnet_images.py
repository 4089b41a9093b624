"""Control images: Canny edges, depth estimation with transformers models, and the depth input of SD 2 depth models.

Canny follows the meaning ComfyUI gives its thresholds (gradient magnitudes of the blurred grey
image in 0..1 units) and runs OpenCV's edge tracing. Depth estimation runs a transformers
depth-estimation model (DPT, Depth Anything, ...) saved in a folder under `models/depth`, with the
image processor saved beside it, and gives a depth IMAGE normalised to 0..1 per image (near is
bright, as depth ControlNets expect). `depth_concat` turns a depth image into the extra UNet input
of stable-diffusion-2-depth exactly as diffusers' StableDiffusionDepth2ImgPipeline prepares it.
"""
from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .models.wrappers import ModuleSlot

LATENT_DOWNSCALE = 8  # SD VAEs: one latent pixel per 8x8 image pixels
GREY_WEIGHTS = (0.299, 0.587, 0.114)
CANNY_BLUR = (5, 1.0)  # Gaussian kernel size and sigma before the gradients, as ComfyUI's Canny
# OpenCV traces edges on int16 gradients; this scale keeps 1/4096 precision below int16's range
# (the Sobel magnitude of a 0..1 image is at most 4 per axis).
_GRADIENT_SCALE = 4096.0


def _check_image(image: Any, what: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        hint = " (that is a MASK [B,H,W]; turn it into an image first)" if isinstance(image, torch.Tensor) and \
            image.ndim == 3 else ""
        raise ValueError(f"input {what!r} has shape {shape}, must be an IMAGE [B,H,W,C] with C = 1, 3 or 4{hint}")
    if min(image.shape[:3]) == 0:
        raise ValueError(f"input {what!r} has shape {tuple(image.shape)}: it holds no pixels")
    return image


def grey(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> [B,H,W] luminance (ITU-R 601 weights; one channel is taken as it is)."""
    if image.shape[-1] == 1:
        return image[..., 0].float()
    r, g, b = (image[..., i].float() for i in range(3))
    return GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b


def canny(image: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Canny edges of every image of a batch as a white-on-black IMAGE [B,H,W,3]."""
    import cv2  # noqa: PLC0415 - only edge detection needs OpenCV

    image = _check_image(image, "image")
    if not 0.0 < low_threshold <= high_threshold:
        raise ValueError(f"Canny: low_threshold {low_threshold} must be > 0 and <= high_threshold {high_threshold}")
    size, sigma = CANNY_BLUR
    out = []
    for frame in grey(image).cpu().numpy().astype(np.float32):
        blurred = cv2.GaussianBlur(frame, (size, size), sigma, borderType=cv2.BORDER_REFLECT)
        gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
        dx = np.round(gx * _GRADIENT_SCALE).astype(np.int16)
        dy = np.round(gy * _GRADIENT_SCALE).astype(np.int16)
        edges = cv2.Canny(dx, dy, low_threshold * _GRADIENT_SCALE, high_threshold * _GRADIENT_SCALE, L2gradient=True)
        out.append(torch.from_numpy(edges.astype(np.float32) / 255.0))
    return torch.stack(out).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()


# ---- depth estimation ---------------------------------------------------------------------------------


@dataclass(eq=False)
class DepthEstimator:
    """A transformers depth-estimation model (in a ModuleSlot) and its image processor."""

    slot: ModuleSlot
    processor: Any
    source: str
    model_type: str

    def pixel_values(self, image: torch.Tensor) -> torch.Tensor:
        """The model input for IMAGE [B,H,W,C], made by the model's own image processor (as diffusers does)."""
        frames = [np.ascontiguousarray(f) for f in image[..., :3].float().clamp(0, 1).cpu().numpy()]
        return self.processor(images=frames, do_rescale=False, return_tensors="pt").pixel_values

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The model's raw predicted depth [B,h,w] (float32, offload device) at its own output size."""
        from . import device as devices  # noqa: PLC0415

        image = _check_image(image, "image")
        if image.shape[-1] == 1:
            image = image.expand(-1, -1, -1, 3)
        pixels = self.pixel_values(image)
        with self.slot.use((), 0) as model:
            param = next(model.parameters())
            depth = model(pixel_values=pixels.to(param.device, param.dtype)).predicted_depth
        return depth.float().to(devices.offload_device())

    def depth_image(self, image: torch.Tensor) -> torch.Tensor:
        """A depth IMAGE [B,H,W,3] of the input's size, each image normalised to 0..1."""
        return normalised_depth_image(self.predict(image), image.shape[1], image.shape[2])


def normalised_depth_image(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Raw depth [B,h,w] -> IMAGE [B,height,width,3]: bicubic to the size, then min-max to 0..1 per image."""
    resized = F.interpolate(depth.float().unsqueeze(1), size=(height, width), mode="bicubic", align_corners=False)
    low = resized.amin(dim=(1, 2, 3), keepdim=True)
    high = resized.amax(dim=(1, 2, 3), keepdim=True)
    span = (high - low).clamp_min(1e-8)
    image = ((resized - low) / span).clamp(0.0, 1.0)
    return image.squeeze(1).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()


_depth_models: weakref.WeakValueDictionary[tuple[Any, ...], DepthEstimator] = weakref.WeakValueDictionary()
_depth_lock = threading.Lock()


def depth_folder_fingerprint(folder: str | os.PathLike[str]) -> list[Any]:
    """Modification times and sizes of a depth model folder's files (changes when the model is replaced)."""
    root = Path(folder)
    return sorted([p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in root.iterdir() if p.is_file())


def load_depth_estimator(folder: str | os.PathLike[str]) -> DepthEstimator:
    """Load (once while in use) a transformers depth-estimation model folder, from disk only."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation  # noqa: PLC0415

    from .models.convert import quiet_progress  # noqa: PLC0415

    root = Path(folder)
    if not (root / "config.json").is_file():
        raise ValueError(f"depth model {str(root)!r} is not a transformers model folder (no config.json)")
    if not (root / "preprocessor_config.json").is_file():
        raise ValueError(f"depth model {str(root)!r} has no preprocessor_config.json; save its image processor "
                         "beside the model (processor.save_pretrained)")
    key = (os.path.realpath(root), tuple(map(tuple, depth_folder_fingerprint(root))))
    with _depth_lock:
        found = _depth_models.get(key)
        if found is not None:
            return found
        try:
            with quiet_progress():
                model = AutoModelForDepthEstimation.from_pretrained(root, local_files_only=True)
                processor = AutoImageProcessor.from_pretrained(root, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"depth model {str(root)!r} cannot be loaded: {err}") from err
        # Depth heads are numerically delicate (DPT-hybrid has batch norms): the VAE's dtype policy fits them.
        slot = ModuleSlot(model.eval().requires_grad_(False), role="vae", name=str(root))
        estimator = DepthEstimator(slot, processor, str(root), str(getattr(model.config, "model_type", "")))
        _depth_models[key] = estimator
        return estimator


# ---- SD 2 depth models ---------------------------------------------------------------------------------


def depth_concat(depth: torch.Tensor, *, downscale: int = LATENT_DOWNSCALE) -> torch.Tensor:
    """A depth IMAGE [B,H,W,C] (or depth [B,H,W]) -> the depth channel [B,1,H/8,W/8] of an SD 2 depth UNet.

    As StableDiffusionDepth2ImgPipeline: bicubic to the latent size, then each map scaled to -1..1.
    """
    if not isinstance(depth, torch.Tensor) or depth.ndim not in (3, 4):
        shape = tuple(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
        raise ValueError(f"input 'depth_map' has shape {shape}, must be an IMAGE [B,H,W,C]")
    maps = depth[..., :3].float().mean(dim=-1) if depth.ndim == 4 else depth.float()
    height, width = maps.shape[-2] // downscale, maps.shape[-1] // downscale
    if height == 0 or width == 0:
        raise ValueError(f"input 'depth_map' is {maps.shape[-1]}x{maps.shape[-2]} pixels, smaller than one latent "
                         f"pixel ({downscale}x{downscale})")
    small = F.interpolate(maps.unsqueeze(1), size=(height, width), mode="bicubic", align_corners=False)
    low = small.amin(dim=(1, 2, 3), keepdim=True)
    high = small.amax(dim=(1, 2, 3), keepdim=True)
    flat = (high - low) <= 0
    scaled = 2.0 * (small - low) / torch.where(flat, torch.ones_like(high), high - low) - 1.0
    return torch.where(flat, torch.zeros_like(scaled), scaled)
