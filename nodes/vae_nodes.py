"""VAE nodes: decode latents to images and encode images to latents (also tiled and for inpainting)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from graph.declare import Boolean, In, Int, node
from graph.schema import Output

from .models.wrappers import VaeWrapper
from .tensors import mask_to_bchw

Latent = dict[str, Any]
Conditioning = list[list[Any]]


@node(category="latent", outputs="IMAGE", display_name="VAE Decode")
def VAEDecode(samples: Latent = In("LATENT", tooltip="The latent to be decoded."),
              vae: VaeWrapper = In("VAE", tooltip="The VAE model used for decoding the latent.")) -> torch.Tensor:
    """Decode latents back into images."""
    return vae.decode(samples["samples"])


@node(category="latent", outputs="LATENT", display_name="VAE Encode")
def VAEEncode(pixels: torch.Tensor = In("IMAGE"), vae: VaeWrapper = In("VAE")) -> Latent:
    """Encode images into latents (alpha is dropped)."""
    return {"samples": vae.encode(pixels[..., :3])}


@node(category="_for_testing", outputs="IMAGE", display_name="VAE Decode (Tiled)")
def VAEDecodeTiled(samples: Latent = In("LATENT"), vae: VaeWrapper = In("VAE"),
                   tile_size: int = Int(512, min=64, max=4096, step=32),
                   overlap: int = Int(64, min=0, max=4096, step=32),
                   temporal_size: int = Int(64, min=8, max=4096, step=4, tooltip="Only for video VAEs."),
                   temporal_overlap: int = Int(8, min=4, max=4096, step=4, tooltip="Only for video VAEs.")) -> torch.Tensor:
    """Decode in overlapping tiles to bound memory on large images."""
    return vae.decode_tiled(samples["samples"], tile_size, overlap)


@node(category="_for_testing", outputs="LATENT", display_name="VAE Encode (Tiled)")
def VAEEncodeTiled(pixels: torch.Tensor = In("IMAGE"), vae: VaeWrapper = In("VAE"),
                   tile_size: int = Int(512, min=64, max=4096, step=64),
                   overlap: int = Int(64, min=0, max=4096, step=32),
                   temporal_size: int = Int(64, min=8, max=4096, step=4, tooltip="Only for video VAEs."),
                   temporal_overlap: int = Int(8, min=4, max=4096, step=4, tooltip="Only for video VAEs.")) -> Latent:
    """Encode in overlapping tiles to bound memory on large images."""
    return {"samples": vae.encode_tiled(pixels[..., :3], tile_size, overlap)}


def _crop_to_8(pixels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    if (h, w) != tuple(pixels.shape[1:3]):
        off_y, off_x = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
        pixels = pixels[:, off_y:off_y + h, off_x:off_x + w, :]
        mask = mask[:, :, off_y:off_y + h, off_x:off_x + w]
    return pixels, mask


def _mask_at(mask: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    return F.interpolate(mask_to_bchw(mask).float(), size=pixels.shape[1:3], mode="bilinear", align_corners=False)


@node(category="latent/inpaint", outputs="LATENT", display_name="VAE Encode (for Inpainting)")
def VAEEncodeForInpaint(pixels: torch.Tensor = In("IMAGE"), vae: VaeWrapper = In("VAE"), mask: torch.Tensor = In("MASK"),
                        grow_mask_by: int = Int(6, min=0, max=64, step=1)) -> Latent:
    """Encode with the masked area set to grey, and keep the (grown) mask as the noise mask."""
    mask = _mask_at(mask, pixels)
    pixels, mask = _crop_to_8(pixels.clone(), mask)
    if grow_mask_by > 0:
        kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
        padding = grow_mask_by // 2
        grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
        grown = grown[..., :mask.shape[-2], :mask.shape[-1]]
    else:
        grown = mask
    keep = (1.0 - mask.round()).squeeze(1)
    for c in range(3):
        pixels[..., c] = (pixels[..., c] - 0.5) * keep + 0.5
    return {"samples": vae.encode(pixels[..., :3]), "noise_mask": grown}


@node(category="conditioning/inpaint", outputs=(Output("CONDITIONING", name="positive"),
                                                Output("CONDITIONING", name="negative"), Output("LATENT", name="latent")))
def InpaintModelConditioning(positive: Conditioning = In("CONDITIONING"), negative: Conditioning = In("CONDITIONING"),
                             vae: VaeWrapper = In("VAE"), pixels: torch.Tensor = In("IMAGE"),
                             mask: torch.Tensor = In("MASK"),
                             noise_mask: bool = Boolean(True, tooltip="Also keep the unmasked area (a noise mask "
                                                                     "on the latent).")
                             ) -> tuple[Conditioning, Conditioning, Latent]:
    """Conditioning for inpainting models: the masked image and the mask as extra UNet input channels."""
    mask = _mask_at(mask, pixels)
    pixels, mask = _crop_to_8(pixels, mask)
    original = vae.encode(pixels[..., :3])
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
    masked = vae.encode((pixels[..., :3] - 0.5) * keep + 0.5)
    extras = {"concat_latent_image": masked, "concat_mask": mask}
    out_latent: Latent = {"samples": original}
    if noise_mask:
        out_latent["noise_mask"] = mask
    return ([[c, {**o, **extras}] for c, o in positive], [[c, {**o, **extras}] for c, o in negative], out_latent)
