"""Turn what a node hands `graph.context.progress(preview=...)` into JPEG or PNG bytes for the websocket.

Accepted: a PIL image; ComfyUI's `(format, image, max_size)` tuple; an array or CPU tensor shaped
[H, W, C] or [B, H, W, C] (float 0..1 or uint8; the first image of a batch); already encoded
JPEG/PNG bytes. Encoding runs on the worker thread, never on the server's loop.
"""
from __future__ import annotations

import io
from typing import Any

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _to_pil(image: Any) -> Any:
    from PIL import Image  # noqa: PLC0415 - only when previews are sent

    if isinstance(image, Image.Image):
        return image
    import numpy as np  # noqa: PLC0415

    if hasattr(image, "detach"):  # a torch tensor; np.asarray reads CPU tensors without naming torch
        image = image.detach()
        if hasattr(image, "cpu"):
            image = image.cpu()
        if hasattr(image, "float") and str(getattr(image, "dtype", "")) not in ("torch.uint8",):
            image = image.float()
    array = np.asarray(image)
    if array.ndim == 4:
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"preview image has shape {array.shape}; expected [H, W, C] or [B, H, W, C]")
    if array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.shape[-1] == 1:
        return Image.fromarray(array[:, :, 0], "L")
    return Image.fromarray(array, "RGBA" if array.shape[-1] == 4 else "RGB")


def encode_preview(preview: Any, max_size: int = 512) -> tuple[bytes, str]:
    """(encoded bytes, MIME type) of a preview, scaled so its longer side is at most max_size."""
    fmt = "JPEG"
    if isinstance(preview, (bytes, bytearray)):
        data = bytes(preview)
        if data.startswith(PNG_MAGIC):
            return data, "image/png"
        if data.startswith(JPEG_MAGIC):
            return data, "image/jpeg"
        raise ValueError("preview bytes are neither JPEG nor PNG")
    if isinstance(preview, tuple) and len(preview) == 3 and isinstance(preview[0], str):
        fmt, preview, size = preview
        max_size = int(size or max_size)
        fmt = "PNG" if fmt.upper() == "PNG" else "JPEG"
    image = _to_pil(preview)
    if max(image.size) > max_size:
        image = image.copy()
        image.thumbnail((max_size, max_size))
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG", compress_level=1)
        return out.getvalue(), "image/png"
    image.save(out, "JPEG", quality=95)
    return out.getvalue(), "image/jpeg"
