"""File routes: `GET /view`, `POST /upload/image`, `POST /upload/mask`.

Every name a client sends goes through `graph.files.confined_path`: `..`, absolute paths,
backslashes, control characters and symlinks that lead out of the folder are refused (400 for a
malformed name, 403 for one that resolves outside). Uploads must be real images with an image
extension, within `--max-upload-size` and 8192^2 pixels, with nothing appended after the image
(polyglots); they are written atomically.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import mimetypes
import threading
import warnings
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import FileField

from ..files import PathEscapeError, PathOutsideError, atomic_write, check_name_part, confined_path, unique_name
from ..untrusted_json import UntrustedJSONError, loads_untrusted
from .folders import directory_for
from .image_end import trailing_payload
from .state import BadRequest, error_response, state_of

routes = web.RouteTableDef()

FILE_TYPES = ("output", "input", "temp")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
INLINE_PREFIXES = ("image/", "video/", "audio/")
# Decoding a tiny file into a gigantic bitmap is a cheap way to exhaust memory: refuse beyond this
# (a 50-megapixel photo fits), and decode one upload at a time: at most 8192^2 x 4 bytes are in use.
MAX_UPLOAD_PIXELS = 8192 * 8192
_DECODING = threading.BoundedSemaphore(1)
# Only these decoders see uploads (PIL would otherwise try every format it knows, EPS and PSD included).
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG's opener also reads MPO
# /view may be pointed at any file in its folder: never let the browser run one as a page of ours.
VIEW_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}


def _folder_kind(raw: str | None) -> str:
    kind = raw or "output"
    if kind not in FILE_TYPES:
        raise BadRequest("invalid_type", f"type {kind!r} must be one of {', '.join(FILE_TYPES)}")
    return kind


def _split_annotation(filename: str, kind: str | None) -> tuple[str, str | None]:
    """'name.png [input]' -> ('name.png', 'input'), as ComfyUI's annotated names."""
    for candidate in FILE_TYPES:
        suffix = f" [{candidate}]"
        if filename.endswith(suffix):
            return filename[: -len(suffix)], candidate
    return filename, kind


def _resolve(base: Path, subfolder: str, filename: str) -> Path:
    """The file's path inside base, or an HTTP error (400 malformed, 403 outside)."""
    try:
        check_name_part(filename, "filename")
        return confined_path(base, subfolder, filename, what="file")
    except PathOutsideError as exc:
        raise web.HTTPForbidden(text=str(exc)) from exc
    except PathEscapeError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc


def _reencode(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    """The image re-encoded for ?preview=webp;90 and/or ?channel=rgb|a."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as img:
        img.load()
        if channel == "rgb":
            img = img.convert("RGB")
        elif channel == "a":
            alpha = img.getchannel("A") if "A" in img.getbands() else Image.new("L", img.size, 255)
            img = Image.new("RGBA", img.size, (0, 0, 0, 0))
            img.putalpha(alpha)
        fmt, quality = "png", 90
        if preview:
            name, _, q = preview.partition(";")
            fmt = name.strip().lower() or "webp"
            if fmt not in ("webp", "jpeg", "jpg", "png"):
                raise BadRequest("invalid_preview", f"preview format {name!r} must be webp, jpeg or png")
            try:
                quality = max(1, min(100, int(q))) if q else 90
            except ValueError:
                raise BadRequest("invalid_preview", f"preview quality {q!r} must be an integer") from None
        out = io.BytesIO()
        if fmt in ("jpeg", "jpg"):
            img.convert("RGB").save(out, "JPEG", quality=quality)
            return out.getvalue(), "image/jpeg"
        if fmt == "webp":
            img.save(out, "WEBP", quality=quality)
            return out.getvalue(), "image/webp"
        img.save(out, "PNG")
        return out.getvalue(), "image/png"


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    query = request.query
    filename = query.get("filename")
    if not filename:
        raise BadRequest("missing_filename", "query parameter 'filename' is required")
    filename, kind = _split_annotation(filename, query.get("type"))
    base = directory_for(state.folders, _folder_kind(kind))
    path = _resolve(base, query.get("subfolder", ""), filename)
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no file {filename!r} in {kind or 'output'}"
                                    f"{'/' + query['subfolder'] if query.get('subfolder') else ''}")
    preview, channel = query.get("preview"), query.get("channel", "rgba")
    if channel not in ("rgba", "rgb", "a"):
        raise BadRequest("invalid_channel", f"channel {channel!r} must be rgba, rgb or a")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    disposition = "inline" if mime.startswith(INLINE_PREFIXES) else "attachment"
    headers = {**VIEW_HEADERS, "Content-Disposition": f'{disposition}; filename="{_quote(path.name)}"'}
    if mime.startswith("image/") and (preview or channel != "rgba"):
        data, mime = await asyncio.to_thread(_reencode, path, preview, channel)
        return web.Response(body=data, content_type=mime, headers=headers)
    if not mime.startswith(INLINE_PREFIXES):
        mime = "application/octet-stream"
    return web.FileResponse(path, headers={**headers, "Content-Type": mime})


def _quote(name: str) -> str:
    return name.replace("\\", "_").replace('"', "_")


# ---- uploads --------------------------------------------------------------------------------------


def _check_image(data: bytes, filename: str) -> Any:
    """The decoded image, or BadRequest if data is not a sane image."""
    from PIL import Image  # noqa: PLC0415

    if Path(filename).suffix.lower() not in IMAGE_EXTENSIONS:
        raise BadRequest("invalid_image", f"upload {filename!r}: the name must end in one of "
                                          f"{', '.join(sorted(IMAGE_EXTENSIONS))}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as probe:
                probe.verify()
            image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise BadRequest("invalid_image", f"upload {filename!r}: {image.width}x{image.height} pixels is "
                                                  f"more than the {MAX_UPLOAD_PIXELS} allowed")
            appended = trailing_payload(data, image.format)
            if appended:
                raise BadRequest("invalid_image", f"upload {filename!r}: {appended} bytes follow the end of the "
                                                  f"{image.format} image; a file with something appended to an "
                                                  "image is refused (save it again as a plain image)")
            with _DECODING:  # one full decode at a time bounds the memory uploads can take
                image.load()
    except BadRequest:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadRequest("invalid_image", f"upload {filename!r}: image too large ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - anything PIL cannot read is not an image
        raise BadRequest("invalid_image", f"upload {filename!r} is not a readable image: {exc}") from exc
    return image


async def _upload_form(request: web.Request) -> tuple[FileField, dict[str, str]]:
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise
    except (ValueError, HttpProcessingError) as exc:  # e.g. a part header with control characters in it
        raise BadRequest("invalid_upload", f"the upload is not a valid multipart form: {exc}") from exc
    upload = form.get("image")
    if not isinstance(upload, FileField):
        raise BadRequest("invalid_upload", "the multipart form needs a file field named 'image'")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return upload, fields


def _target(request: web.Request, fields: dict[str, str], filename: str) -> tuple[Path, str, str]:
    """(folder to write into, subfolder, type) for an upload, all confined."""
    kind = _folder_kind(fields.get("type") or "input")
    subfolder = fields.get("subfolder", "")
    base = directory_for(state_of(request).folders, kind)
    try:
        check_name_part(filename, "filename")
        if "/" in filename or "\\" in filename:  # '\\' separates folders wherever a name is read back
            raise PathEscapeError(f"filename {filename!r} must not contain '/' or '\\'; use the subfolder field")
        folder = confined_path(base, subfolder, what="subfolder")
    except PathOutsideError as exc:
        raise web.HTTPForbidden(text=str(exc)) from exc
    except PathEscapeError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    return folder, subfolder, kind


def _save_upload(folder: Path, filename: str, data: bytes, overwrite: bool) -> str:
    """Write data as folder/filename (or a ' (n)' variant); an identical existing file is reused."""
    folder.mkdir(parents=True, exist_ok=True)
    name = filename
    if not overwrite and (folder / name).exists():
        digest = hashlib.sha256(data).digest()
        if (folder / name).is_file() and hashlib.sha256((folder / name).read_bytes()).digest() == digest:
            return name
        name = unique_name(folder, filename)
    if (folder / name).is_symlink():
        raise web.HTTPForbidden(text=f"refusing to overwrite {name!r}: it is a symlink")
    atomic_write(folder / name, data)
    return name


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    upload, fields = await _upload_form(request)
    filename = upload.filename or ""
    folder, subfolder, kind = _target(request, fields, filename)
    data = await asyncio.to_thread(upload.file.read)
    await asyncio.to_thread(_check_image, data, filename)
    name = await asyncio.to_thread(_save_upload, folder, filename, data, _flag(fields.get("overwrite")))
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


def _merge_mask(original: Path, mask_data: bytes, mask_name: str) -> bytes:
    """The original image with the uploaded image's alpha, as PNG, keeping the original's text chunks."""
    from PIL import Image, PngImagePlugin  # noqa: PLC0415

    mask = _check_image(mask_data, mask_name)
    with Image.open(original) as img:
        img.load()
        info = PngImagePlugin.PngInfo()
        for key, value in getattr(img, "text", {}).items():
            info.add_text(key, value)
        merged = img.convert("RGBA")
    alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
    if alpha.size != merged.size:
        alpha = alpha.resize(merged.size)
    merged.putalpha(alpha)
    out = io.BytesIO()
    merged.save(out, "PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    state = state_of(request)
    upload, fields = await _upload_form(request)
    try:
        ref = loads_untrusted(fields.get("original_ref", ""))
    except UntrustedJSONError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise BadRequest("invalid_upload", "original_ref must be JSON like {\"filename\": ..., \"subfolder\": ..., "
                                           "\"type\": ...}")
    ref_name, ref_kind = _split_annotation(ref["filename"], ref.get("type"))
    original = _resolve(directory_for(state.folders, _folder_kind(ref_kind)), str(ref.get("subfolder") or ""),
                        ref_name)
    if not original.is_file():
        return error_response(404, "original_not_found", "Original image not found", f"no file {ref_name!r}")
    filename = upload.filename or ""
    folder, subfolder, kind = _target(request, fields, filename)
    data = await asyncio.to_thread(upload.file.read)
    merged = await asyncio.to_thread(_merge_mask, original, data, filename)
    name = await asyncio.to_thread(_save_upload, folder, filename, merged, _flag(fields.get("overwrite")))
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})
