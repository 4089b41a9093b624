"""Uploads and file names: oversized, truncated, non-image, decompression-bomb and polyglot files are refused
without the server's memory growing; names with traversal, NUL bytes, odd encodings and symlinks are refused.

Against a real server process (2 MB upload limit). The server's RSS is sampled with psutil while the
hostile files arrive; the figures (files tried, refused, peak growth) go to docs/reliability.md.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.hardening.hardening_harness import HardServer, RssSampler, strict_json
from tests.hardening.strategies import HOSTILE_TEXT
from tests.hardening.prompt_checks import fuzz_settings
from tests.server.server_harness import http, multipart

MB = 1 << 20
BOMB_GROWTH_LIMIT = 48 * MB  # far below what any bomb here would take if decoded


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def photo(width: int = 48, height: int = 32) -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8), "RGB")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A greyscale PNG of width x height zero pixels, streamed through zlib (kilobytes on disk)."""
    row = b"\x00" * (width + 1)
    packer = zlib.compressobj(9)
    compressed = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", compressed) + _chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size and holds almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header is patched to claim width x height."""
    data = bytearray(encode(photo(16, 16), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(16, 16).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    at = data.index(b"\x2c", 13)
    data[at + 5:at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def text_chunk_bomb() -> bytes:
    """A PNG with a compressed text chunk that inflates to 200 MB."""
    packer = zlib.compressobj(9)
    block = b"A" * MB
    text = b"".join(packer.compress(block) for _ in range(200)) + packer.flush()
    data = encode(photo(), "PNG")
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + _chunk(b"zTXt", b"comment\x00\x00" + text) + data[iend:]


def zip_bytes() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload.html", "<script>alert(document.cookie)</script>")
    return out.getvalue()


def hostile_files() -> dict[str, tuple[str, bytes]]:
    """name -> (upload file name, content); every one must be refused."""
    png = encode(photo(), "PNG")
    jpeg = encode(photo(), "JPEG")
    return {
        "truncated_png": ("cut.png", png[: len(png) // 2]),
        "truncated_jpeg": ("cut.jpg", jpeg[: len(jpeg) // 2]),
        "header_only_png": ("claims.png", png_header_only(64, 64)),
        "text": ("notes.png", b"just some text, not an image\n" * 20),
        "html": ("page.png", b"<!doctype html><script>alert(1)</script>"),
        "svg": ("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
        "pdf": ("doc.png", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"),
        "eps": ("figure.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n(x) show\n"),
        "zip": ("archive.png", zip_bytes()),
        "empty": ("empty.png", b""),
        "image_with_html_name": ("page.html", png),
        "bomb_png_20k": ("bomb.png", png_bomb(20_000, 20_000)),
        "bomb_png_claimed_60k": ("claim.png", png_header_only(60_000, 60_000)),
        "bomb_jpeg_claimed_65k": ("claim.jpg", jpeg_claiming(65_000, 65_000)),
        "bomb_gif_claimed_65k": ("claim.gif", gif_claiming(65_000, 65_000)),
        "bomb_text_chunk": ("ztxt.png", text_chunk_bomb()),
        "polyglot_png_zip": ("poly.png", png + zip_bytes()),
        "polyglot_png_html": ("poly2.png", png + b"<html><script>alert(1)</script></html>"),
        "polyglot_jpeg_php": ("poly.jpg", jpeg + b"<?php system($_GET['c']); ?>"),
        "polyglot_gif_jar": ("poly.gif", encode(photo().convert("P"), "GIF") + zip_bytes()),
        "polyglot_webp_zip": ("poly.webp", encode(photo(), "WEBP") + zip_bytes()),
        "polyglot_bmp_html": ("poly.bmp", encode(photo(), "BMP") + b"<script>alert(1)</script>"),
    }


def upload(server: HardServer, filename: str, content: bytes, **fields: str) -> Any:
    body, content_type = multipart(fields, {"image": (filename, content)})
    return http("POST", server.url + "/upload/image", data=body, headers={"Content-Type": content_type})


def input_files(server: HardServer) -> set[str]:
    return {p.relative_to(server.base).as_posix() for p in (server.base / "input").rglob("*") if p.is_file()}


def test_hostile_files_are_refused_without_memory_growth(target: HardServer, figures: Any) -> None:
    before_files = input_files(target)
    baseline = target.rss()
    answers = {}
    with RssSampler(target.proc.pid) as sampler:
        for name, (filename, content) in hostile_files().items():
            reply = upload(target, filename, content)
            answers[name] = reply.status
            assert reply.status == 400, (name, reply.status, reply.body[:300])
            assert strict_json(reply.body)["error"]["type"] == "invalid_image", name
        oversized = upload(target, "huge.png", encode(photo(), "PNG") + os.urandom(3 * MB))
        answers["oversized_3MB"] = oversized.status
        assert oversized.status == 413
    growth = sampler.peak - baseline
    assert input_files(target) == before_files  # nothing refused was written
    assert growth < BOMB_GROWTH_LIMIT, f"server RSS grew by {growth / MB:.0f} MB"
    figures.record(files=len(answers), refused=sum(1 for s in answers.values() if s in (400, 413)),
                   rss_peak_growth_mb=round(growth / MB, 1), rss_samples=sampler.samples)


def test_plain_images_of_every_format_are_accepted(target: HardServer, figures: Any) -> None:
    good = {"png": encode(photo(), "PNG"), "jpg": encode(photo(), "JPEG"), "webp": encode(photo(), "WEBP"),
            "gif": encode(photo().convert("P"), "GIF"), "bmp": encode(photo(), "BMP"),
            "tiff": encode(photo(), "TIFF"), "jpeg": encode(photo(), "JPEG", progressive=True),
            "png_padded": encode(photo(), "PNG") + b"\x00" * 16}
    big = png_bomb(4096, 4096)  # 16 megapixels of zeros: large, legitimate, within the limit
    baseline = target.rss()
    with RssSampler(target.proc.pid) as sampler:
        for ext, content in good.items():
            name = f"good_{ext.split('_')[0]}.{ext.split('_')[0]}"
            reply = upload(target, name, content, overwrite="true")
            assert reply.status == 200, (ext, reply.body)
        assert upload(target, "big_plain.png", big, overwrite="true").status == 200
    figures.record(formats=len(good) + 1, rss_peak_growth_mb_for_16_megapixels=round((sampler.peak - baseline) / MB, 1))
    assert (target.base / "input" / "big_plain.png").read_bytes() == big


NAMES = [
    ("../evil.png", {}), ("..\\evil.png", {}), ("sub/evil.png", {}), ("C:\\evil.png", {}), ("sub\\evil.png", {}),
    ("evil.png", {"subfolder": "../.."}), ("evil.png", {"subfolder": "/etc"}), ("evil.png", {"subfolder": "a/../../b"}),
    ("\uff0e\uff0e/evil.png", {}), ("evil.png", {"subfolder": "\uff0e\uff0e"}), ("nul\x00.png", {}),
    ("evil.png", {"subfolder": "x\x00y"}), ("rtl\u202egnp.png", {}), ("evil.png", {"subfolder": "\u202e"}),
    ("bell\x07.png", {}), ("c1\x85.png", {}), ("evil.png", {"type": "../output"}), ("evil.png", {"type": "models"}),
]


@pytest.mark.parametrize("filename, fields", NAMES, ids=[repr(n) for n in NAMES])
def test_hostile_names_are_refused(target: HardServer, filename: str, fields: dict[str, str]) -> None:
    before = input_files(target)
    reply = upload(target, filename, encode(photo(), "PNG"), **fields)
    assert reply.status in (400, 403), (reply.status, reply.body[:200])
    assert input_files(target) == before
    assert not (target.base / "evil.png").exists()


def test_a_leading_slash_is_dropped_and_the_file_stays_inside(target: HardServer) -> None:
    reply = upload(target, "/abs_slash.png", encode(photo(), "PNG"), overwrite="true")
    assert reply.status == 200 and reply.json() == {"name": "abs_slash.png", "subfolder": "", "type": "input"}
    assert (target.base / "input" / "abs_slash.png").is_file() and not Path("/abs_slash.png").exists()


def raw_upload(server: HardServer, disposition: bytes, content: bytes) -> Any:
    """A multipart upload with the Content-Disposition header written byte for byte."""
    boundary = b"hardeningboundary"
    body = (b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\nContent-Type: image/png\r\n\r\n"
            + content + b"\r\n--" + boundary + b"--\r\n")
    return http("POST", server.url + "/upload/image", data=body,
                headers={"Content-Type": "multipart/form-data; boundary=hardeningboundary"})


def test_odd_encodings_of_the_name_are_refused(target: HardServer, figures: Any) -> None:
    png = encode(photo(), "PNG")
    dispositions = [
        b"form-data; name=\"image\"; filename*=UTF-8''..%2F..%2Fevil.png",
        b"form-data; name=\"image\"; filename*=UTF-8''%2E%2E%2Fevil.png",
        b"form-data; name=\"image\"; filename*=UTF-8''%C0%AE%C0%AE%2Fevil.png",
        b"form-data; name=\"image\"; filename=\"\xc0\xae\xc0\xae/evil.png\"",
        b"form-data; name=\"image\"; filename=\"\xff\xfe.png\"",
        b"form-data; name=\"image\"; filename=\"..%2Fevil.png\"; filename*=UTF-8''..%2Fevil.png",
        b"form-data; name=\"image\"; filename=\"a\\\\..\\\\..\\\\evil.png\"",
    ]
    before = input_files(target)
    answers = []
    for disposition in dispositions:
        reply = raw_upload(target, disposition, png)
        answers.append(reply.status)
        assert reply.status in (400, 403), (disposition, reply.status, reply.body[:200])
    assert input_files(target) == before
    figures.record(cases=len(dispositions), statuses=answers)


def test_symlinks_are_neither_followed_nor_overwritten(target: HardServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    inputs = target.base / "input"
    inputs.mkdir(exist_ok=True)
    (inputs / "link.png").unlink(missing_ok=True)
    os.symlink(secret, inputs / "link.png")
    (inputs / "linkdir").unlink(missing_ok=True)
    os.symlink(tmp_path, inputs / "linkdir")
    png = encode(photo(), "PNG")
    assert upload(target, "link.png", png, overwrite="true").status == 403
    assert upload(target, "new.png", png, subfolder="linkdir").status == 403
    assert http("GET", f"{target.url}/view?type=input&filename=link.png").status == 403
    assert http("GET", f"{target.url}/view?type=input&filename=secret.png&subfolder=linkdir").status == 403
    assert secret.read_bytes() == b"not yours" and not (tmp_path / "new.png").exists()


def test_fuzzed_names_never_escape_the_folder(target: HardServer, heavy: bool, figures: Any) -> None:
    png = encode(photo(), "PNG")
    outside_before = set(os.listdir(target.base))
    statuses: dict[int, int] = {}
    name_text = st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE_TEXT[:20]))

    @fuzz_settings(heavy, 100, 3000)
    @given(name_text, name_text, st.sampled_from(["input", "output", "temp", "", "..", "x"]))
    def check(name: str, subfolder: str, kind: str) -> None:
        filename = f"{name}.png"
        try:
            body, content_type = multipart({"subfolder": subfolder, "type": kind}, {"image": (filename, png)})
        except UnicodeEncodeError:  # a lone surrogate cannot even be sent as UTF-8
            return
        reply = http("POST", target.url + "/upload/image", data=body, headers={"Content-Type": content_type})
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
        assert reply.status in (200, 400, 403), (filename, subfolder, reply.status, reply.body[:200])
        if reply.status == 200:  # what was accepted is served back as it was sent, from inside its folder
            answer = strict_json(reply.body)
            back = http("GET", target.url + "/view?" + _query(filename=answer["name"], subfolder=answer["subfolder"],
                                                                type=answer["type"]))
            assert back.status == 200 and back.body == png, (answer, back.status)
        view = http("GET", target.url + "/view?" + _query(filename=filename, subfolder=subfolder, type=kind))
        assert view.status in (200, 400, 403, 404), (filename, subfolder, view.status)

    check()
    assert set(os.listdir(target.base)) == outside_before  # nothing written beside the folders
    figures.record(cases=sum(statuses.values()), statuses={str(k): v for k, v in sorted(statuses.items())})


def _query(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params, errors="surrogatepass")
