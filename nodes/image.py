"""Image nodes: load, save and preview images, resize, invert, batch, pad for outpainting.

IMAGE is float32 [B,H,W,C] in 0..1; MASK is [B,H,W] in 0..1 (ComfyUI's conventions).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import string
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin

import graph
from graph.declare import Combo, Float, Hidden, In, Int, String, node
from graph.files import atomic_write
from graph.nodedef import Result
from graph.schema import MAX_RESOLUTION

from .folders import UnsafePathError, safe_join
from .runtime import runtime
from .tensors import center_crop, image_to_pil, pil_to_image, resize_bchw

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
# Refuse decompression bombs before PIL allocates them (about 16k x 16k).
Image.MAX_IMAGE_PIXELS = MAX_RESOLUTION * MAX_RESOLUTION


def input_images() -> list[str]:
    """Image files in the input folder, for LoadImage's list (subfolders included)."""
    root = Path(runtime().folders.input_dir)
    if not root.is_dir():
        return []
    names = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(names)


def image_path(name: str) -> Path:
    """The file behind a LoadImage value (`name`, or ComfyUI's `name [output]` annotation)."""
    return runtime().folders.annotated_path(name, "input")


def _file_sha256(image: str) -> str:
    digest = hashlib.sha256()
    with open(image_path(image), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _image_exists(image: str) -> bool | str:
    try:
        path = image_path(image)
    except (UnsafePathError, ValueError) as exc:
        return f"input 'image' is {image!r}: {exc}"
    if not path.is_file():
        return f"input 'image' is {image!r}, which is not a file in the input folder"
    return True


def open_image(image: str) -> Image.Image:
    path = image_path(image)
    try:
        img = Image.open(path)
        img.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image {image!r} is too large to load: {exc}") from exc
    except OSError as exc:
        raise ValueError(f"image {image!r} cannot be read as an image: {exc}") from exc
    return img


def _frame_to_tensors(frame: Image.Image) -> tuple[torch.Tensor, torch.Tensor | None]:
    frame = ImageOps.exif_transpose(frame) or frame
    if frame.mode == "I":  # 16-bit greyscale PNGs
        frame = frame.point(lambda v: v * (1 / 255))
    rgb = pil_to_image(frame)
    alpha = None
    if "A" in frame.getbands():
        alpha = torch.from_numpy(np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0)
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = torch.from_numpy(np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0)
    return rgb, alpha


@node(category="image", outputs=("IMAGE", "MASK"), display_name="Load Image",
      fingerprint=_file_sha256, validate=_image_exists)
def LoadImage(image: str = Combo(input_images, image_upload=True)) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an image from the input folder; the mask is 1 - alpha (all frames of an animation as a batch)."""
    img = open_image(image)
    images, masks = [], []
    size = None
    for frame in ImageSequence.Iterator(img):
        rgb, alpha = _frame_to_tensors(frame)
        if size is None:
            size = rgb.shape[:2]
        elif rgb.shape[:2] != size:
            continue  # frames of another size cannot share a batch
        images.append(rgb)
        masks.append(1.0 - alpha if alpha is not None else torch.zeros((64, 64), dtype=torch.float32))
    if not images:
        raise ValueError(f"image {image!r} has no frames")
    if any(m.shape != masks[0].shape for m in masks):
        masks = [torch.zeros(size, dtype=torch.float32) for _ in masks]
    return torch.stack(images), torch.stack(masks)


@node(category="mask", outputs="MASK", display_name="Load Image (as Mask)",
      fingerprint=lambda image, channel: _file_sha256(image), validate=_image_exists)
def LoadImageMask(image: str = Combo(input_images, image_upload=True),
                  channel: str = Combo(["alpha", "red", "green", "blue"])) -> torch.Tensor:
    """Load one channel of an image as a mask (alpha is inverted: transparent = 1)."""
    img = ImageOps.exif_transpose(open_image(image)) or open_image(image)
    if img.mode == "I":
        img = img.point(lambda v: v * (1 / 255))
    letter = channel[0].upper()
    if img.mode not in ("RGBA", "RGB", "L", "LA"):
        img = img.convert("RGBA")
    if letter not in img.getbands():
        return torch.zeros((1, 64, 64), dtype=torch.float32)
    mask = torch.from_numpy(np.asarray(img.getchannel(letter), dtype=np.float32) / 255.0)
    return (1.0 - mask if letter == "A" else mask).unsqueeze(0)


# ---- saving -------------------------------------------------------------------------------------------

def _expand_prefix(prefix: str, image: torch.Tensor) -> str:
    now = datetime.now()
    subs = {"%width%": str(image.shape[1]), "%height%": str(image.shape[0]), "%year%": f"{now.year}",
            "%month%": f"{now.month:02}", "%day%": f"{now.day:02}", "%hour%": f"{now.hour:02}",
            "%minute%": f"{now.minute:02}", "%second%": f"{now.second:02}"}
    for key, value in subs.items():
        prefix = prefix.replace(key, value)
    return prefix


def _versions() -> dict[str, str]:
    import diffusers  # noqa: PLC0415 - only for the metadata

    from .device import policy  # noqa: PLC0415

    return {"diffloom": graph.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            **policy().describe()}


def png_metadata(prompt: Any, extra_pnginfo: Any) -> PngImagePlugin.PngInfo:
    """ComfyUI's tEXt chunks (`prompt`, one per extra_pnginfo key) plus what reproduces the image here."""
    info = PngImagePlugin.PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            info.add_text(str(key), json.dumps(value))
    info.add_text("diffloom", json.dumps(_versions()))
    return info


def _reserve(folder: Path, stem: str) -> tuple[Path, int]:
    """Claim `<stem>_<counter>_.png` with O_EXCL so concurrent prompts never overwrite each other."""
    folder.mkdir(parents=True, exist_ok=True)
    pattern_start = f"{Path(stem).name}_"
    counters = []
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(pattern_start) and name.endswith("_.png"):
            middle = name[len(pattern_start):-len("_.png")]
            if middle.isdigit():
                counters.append(int(middle))
    counter = max(counters, default=0) + 1
    while True:
        path = folder / f"{Path(stem).name}_{counter:05}_.png"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path, counter
        except FileExistsError:
            counter += 1


def save_images(images: torch.Tensor, prefix: str, kind: str, prompt: Any, extra_pnginfo: Any,
                compress_level: int) -> list[dict[str, str]]:
    """Write a batch as PNGs under the output or temp folder and return ComfyUI's UI records."""
    rt = runtime()
    base = Path(rt.folders.get_directory_by_type(kind))
    prefix = _expand_prefix(prefix, images[0]) if len(images) else prefix
    try:
        target = safe_join(base, prefix + "_x", what="filename_prefix")
    except UnsafePathError as exc:
        raise ValueError(f"input 'filename_prefix' is {prefix!r}: {exc}") from exc
    folder = target.parent
    subfolder = folder.relative_to(base.resolve()).as_posix() if folder != base.resolve() else ""
    stem = Path(prefix).name
    metadata = png_metadata(prompt, extra_pnginfo) if rt.write_metadata else None
    records = []
    written: list[Path] = []
    target_name = f"{stem}_*_.png in {folder}"
    try:
        for image in images:
            path, _ = _reserve(folder, stem)
            written.append(path)
            target_name = str(path)
            atomic_write(path, _encode_png(image_to_pil(image), metadata, compress_level))
            records.append({"filename": path.name, "subfolder": subfolder, "type": kind})
    except BaseException as exc:
        # A failed write (a full disk) fails the whole call: no file of it stays behind, as history lists none.
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"could not save {target_name}: {exc.strerror or exc}") from exc
        raise
    return records


def _encode_png(img: Image.Image, metadata: PngImagePlugin.PngInfo | None, compress_level: int) -> bytes:
    import io  # noqa: PLC0415

    buffer = io.BytesIO()
    img.save(buffer, format="PNG", pnginfo=metadata, compress_level=compress_level)
    return buffer.getvalue()


@node(category="image", output_node=True, display_name="Save Image")
def SaveImage(images: torch.Tensor = In("IMAGE", tooltip="The images to save."),
              filename_prefix: str = String("ComfyUI", tooltip="The prefix for the file names; may hold "
                                            "subfolders and %width%, %height%, %year%... ."),
              prompt: Any = Hidden("PROMPT"), extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")) -> Result:
    """Save images to the output folder as PNG with the workflow embedded."""
    return Result(ui={"images": save_images(images, filename_prefix, "output", prompt, extra_pnginfo, 4)})


@node(category="image", output_node=True, display_name="Preview Image")
def PreviewImage(images: torch.Tensor = In("IMAGE"), prompt: Any = Hidden("PROMPT"),
                 extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")) -> Result:
    """Show images without keeping them (written to the temp folder)."""
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return Result(ui={"images": save_images(images, f"ComfyUI_temp_{suffix}", "temp", prompt, extra_pnginfo, 1)})


# ---- transforms ---------------------------------------------------------------------------------------

def _bhwc_resize(image: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    x = image.movedim(-1, 1)
    if crop == "center":
        x = center_crop(x, width, height)
    return resize_bchw(x, width, height, method).movedim(1, -1).clamp(0, 1)


@node(category="image/upscaling", outputs="IMAGE", display_name="Upscale Image")
def ImageScale(image: torch.Tensor = In("IMAGE"), upscale_method: str = Combo(IMAGE_METHODS),
               width: int = Int(512, min=0, max=MAX_RESOLUTION, step=1),
               height: int = Int(512, min=0, max=MAX_RESOLUTION, step=1),
               crop: str = Combo(["disabled", "center"])) -> torch.Tensor:
    """Resize images to a size (0 for one side keeps the aspect ratio)."""
    if width == 0 and height == 0:
        return image
    h, w = image.shape[1], image.shape[2]
    if width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    return _bhwc_resize(image, width, height, upscale_method, crop)


@node(category="image/upscaling", outputs="IMAGE", display_name="Upscale Image By")
def ImageScaleBy(image: torch.Tensor = In("IMAGE"), upscale_method: str = Combo(IMAGE_METHODS),
                 scale_by: float = Float(1.0, min=0.01, max=8.0, step=0.01)) -> torch.Tensor:
    """Resize images by a factor."""
    return _bhwc_resize(image, round(image.shape[2] * scale_by), round(image.shape[1] * scale_by),
                        upscale_method, "disabled")


@node(category="image", outputs="IMAGE", display_name="Invert Image")
def ImageInvert(image: torch.Tensor = In("IMAGE")) -> torch.Tensor:
    """Invert the colours: 1 - image."""
    return 1.0 - image


@node(category="image", outputs="IMAGE", display_name="Batch Images")
def ImageBatch(image1: torch.Tensor = In("IMAGE"), image2: torch.Tensor = In("IMAGE")) -> torch.Tensor:
    """Join two batches; the second is resized (centre crop) to the first's size if they differ."""
    if image1.shape[1:] != image2.shape[1:]:
        image2 = _bhwc_resize(image2[..., :image1.shape[-1]], image1.shape[2], image1.shape[1], "bilinear", "center")
    return torch.cat((image1, image2), dim=0)


@node(category="image", outputs="IMAGE", display_name="EmptyImage")
def EmptyImage(width: int = Int(512, min=1, max=MAX_RESOLUTION, step=1),
               height: int = Int(512, min=1, max=MAX_RESOLUTION, step=1),
               batch_size: int = Int(1, min=1, max=4096),
               color: int = Int(0, min=0, max=0xFFFFFF, step=1, display="color")) -> torch.Tensor:
    """A batch of images of one colour (0xRRGGBB)."""
    rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
    return rgb.expand(batch_size, height, width, 3).clone()


@node(category="image", outputs=("IMAGE", "MASK"), display_name="Pad Image for Outpainting")
def ImagePadForOutpaint(image: torch.Tensor = In("IMAGE"),
                        left: int = Int(0, min=0, max=MAX_RESOLUTION, step=8),
                        top: int = Int(0, min=0, max=MAX_RESOLUTION, step=8),
                        right: int = Int(0, min=0, max=MAX_RESOLUTION, step=8),
                        bottom: int = Int(0, min=0, max=MAX_RESOLUTION, step=8),
                        feathering: int = Int(40, min=0, max=MAX_RESOLUTION, step=1)) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow the canvas with grey and give a mask of the new area, feathered into the old one."""
    b, h, w, c = image.shape
    out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=torch.float32)
    out[:, top:top + h, left:left + w, :] = image
    mask = torch.ones((h + top + bottom, w + left + right), dtype=torch.float32)
    inner = torch.zeros((h, w), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        ys = torch.arange(h).view(-1, 1).expand(h, w)
        xs = torch.arange(w).view(1, -1).expand(h, w)
        big = torch.full((h, w), float(h + w))
        d = torch.minimum(torch.minimum(torch.where(torch.tensor(top > 0), ys.float(), big),
                                        torch.where(torch.tensor(bottom > 0), (h - ys - 1).float(), big)),
                          torch.minimum(torch.where(torch.tensor(left > 0), xs.float(), big),
                                        torch.where(torch.tensor(right > 0), (w - xs - 1).float(), big)))
        inner = torch.where(d < feathering, ((feathering - d) / feathering) ** 2, inner)
    mask[top:top + h, left:left + w] = inner
    return out, mask.unsqueeze(0)
