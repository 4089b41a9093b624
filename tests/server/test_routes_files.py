"""GET /view, POST /upload/image and /upload/mask: shapes, naming, re-encoding, and every way out of a folder refused."""
from __future__ import annotations

import io
import os
import urllib.parse
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from tests.server.server_harness import Reply, ServerProcess, http, multipart


def png(color: tuple[int, ...] = (200, 10, 10), size: tuple[int, int] = (6, 4), mode: str = "RGB",
        text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def upload(server: ServerProcess, filename: str, content: bytes, route: str = "/upload/image",
           **fields: str) -> Reply:
    body, ctype = multipart(fields, {"image": (filename, content)})
    return http("POST", server.url + route, data=body, headers={"Content-Type": ctype})


def view(server: ServerProcess, **params: str) -> Reply:
    return server.get("/view?" + urllib.parse.urlencode(params))


def test_upload_then_view(server: ServerProcess) -> None:
    content = png()
    reply = upload(server, "cat.png", content)
    assert reply.status == 200 and reply.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
    assert (server.base / "input" / "cat.png").read_bytes() == content
    shown = view(server, filename="cat.png", type="input")
    assert shown.status == 200 and shown.body == content
    assert shown.headers["Content-Type"] == "image/png"
    assert shown.headers["X-Content-Type-Options"] == "nosniff"
    assert 'filename="cat.png"' in shown.headers["Content-Disposition"]
    annotated = server.get("/api/view?" + urllib.parse.urlencode({"filename": "cat.png [input]"}))
    assert annotated.status == 200 and annotated.body == content


def test_upload_names_same_content_reuse_and_collisions(server: ServerProcess) -> None:
    first = png((1, 2, 3))
    assert upload(server, "same.png", first).json()["name"] == "same.png"
    assert upload(server, "same.png", first).json()["name"] == "same.png"
    other = png((4, 5, 6))
    assert upload(server, "same.png", other).json()["name"] == "same (1).png"
    assert upload(server, "same.png", png((7, 8, 9))).json()["name"] == "same (2).png"
    replaced = upload(server, "same.png", other, overwrite="true")
    assert replaced.json()["name"] == "same.png"
    assert (server.base / "input" / "same.png").read_bytes() == other
    nested = upload(server, "deep.png", first, subfolder="a/b", type="temp")
    assert nested.json() == {"name": "deep.png", "subfolder": "a/b", "type": "temp"}
    assert view(server, filename="deep.png", subfolder="a/b", type="temp").body == first


def test_view_preview_and_channels(server: ServerProcess) -> None:
    rgba = png((10, 20, 30, 77), mode="RGBA")
    upload(server, "alpha.png", rgba)
    webp = view(server, filename="alpha.png", type="input", preview="webp;50")
    assert webp.status == 200 and webp.headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.body)).format == "WEBP"
    jpeg = view(server, filename="alpha.png", type="input", preview="jpeg;80")
    assert Image.open(io.BytesIO(jpeg.body)).format == "JPEG"
    rgb = Image.open(io.BytesIO(view(server, filename="alpha.png", type="input", channel="rgb").body))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (10, 20, 30)
    alpha = Image.open(io.BytesIO(view(server, filename="alpha.png", type="input", channel="a").body))
    assert alpha.mode == "RGBA" and alpha.getpixel((0, 0)) == (0, 0, 0, 77)
    assert view(server, filename="alpha.png", type="input", channel="x").status == 400
    assert view(server, filename="alpha.png", type="input", preview="gif;5").status == 400


def test_view_errors(server: ServerProcess) -> None:
    assert server.get("/view").status == 400
    assert view(server, filename="nothing-here.png").status == 404
    assert view(server, filename="cat.png", type="models").status == 400


def test_view_serves_non_images_as_downloads(server: ServerProcess) -> None:
    (server.base / "output" / "page.html").write_text("<script>alert(1)</script>")
    reply = view(server, filename="page.html")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in reply.headers["Content-Security-Policy"]


TRAVERSALS = [
    {"filename": "../user/diffloom.db"},
    {"filename": "..\\user\\diffloom.db"},
    {"filename": "diffloom.db", "subfolder": "../user"},
    {"filename": "diffloom.db", "subfolder": "..\\user"},
    {"filename": "diffloom.db", "subfolder": "x/../../user"},
    {"filename": "/etc/passwd"},
    {"filename": "passwd", "subfolder": "/etc"},
    {"filename": "C:\\Windows\\win.ini"},
    {"filename": "x.png\x00.txt"},
    {"filename": "\uff0e\uff0e/user/diffloom.db"},
]


@pytest.mark.parametrize("params", TRAVERSALS, ids=[repr(t) for t in TRAVERSALS])
def test_view_refuses_traversal(server: ServerProcess, params: dict[str, str]) -> None:
    reply = view(server, **params)
    assert reply.status == 400, reply.body
    assert b"SQLite" not in reply.body


def test_view_refuses_raw_encoded_traversal(server: ServerProcess) -> None:
    for query in ("filename=..%2Fuser%2Fdiffloom.db", "filename=%2E%2E%2Fuser%2Fdiffloom.db",
                  "filename=diffloom.db&subfolder=%2E%2E%2Fuser", "filename=%252e%252e%252fuser%252fdiffloom.db"):
        reply = server.get("/view?" + query)
        assert reply.status in (400, 404), query
        assert b"SQLite" not in reply.body


def test_view_refuses_symlinks_out_of_the_folder(server: ServerProcess) -> None:
    link = server.base / "output" / "escape"
    if not link.exists():
        os.symlink(server.base / "user", link)
    reply = view(server, filename="diffloom.db", subfolder="escape")
    assert reply.status == 403 and b"SQLite" not in reply.body
    file_link = server.base / "output" / "db.png"
    if not file_link.exists():
        os.symlink(server.base / "user" / "diffloom.db", file_link)
    assert view(server, filename="db.png").status == 403


@pytest.mark.parametrize("filename, fields, status", [
    ("../evil.png", {}, 400),
    ("..\\evil.png", {}, 400),
    ("sub/evil.png", {}, 400),
    ("evil.png", {"subfolder": "../../outside"}, 400),
    ("evil.png", {"subfolder": "/tmp"}, 400),
    ("evil.png", {"type": "models"}, 400),
    ("evil.png", {"subfolder": "escape"}, 403),  # the symlink made by the test above, or by this one
])
def test_upload_refuses_traversal(server: ServerProcess, filename: str, fields: dict[str, str], status: int) -> None:
    link = server.base / "input" / "escape"
    if not link.exists():
        os.symlink(server.base / "user", link)
    reply = upload(server, filename, png(), **fields)
    assert reply.status == status, reply.body
    assert not (server.base / "evil.png").exists() and not (server.base / "user" / "evil.png").exists()
    assert not Path("/tmp/evil.png").exists() and not (server.base.parent / "outside").exists()


def test_upload_refuses_what_is_not_an_image(server: ServerProcess) -> None:
    fake = upload(server, "fake.png", b"<html>not an image</html>")
    assert fake.status == 400 and fake.json()["error"]["type"] == "invalid_image"
    wrong_name = upload(server, "real.html", png())
    assert wrong_name.status == 400 and "must end in" in wrong_name.json()["error"]["message"]
    truncated = upload(server, "cut.png", png()[:40])
    assert truncated.status == 400
    no_file = http("POST", server.url + "/upload/image", data=b"x=1",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert no_file.status == 400
    assert not (server.base / "input" / "fake.png").exists()


def test_upload_size_limit(server: ServerProcess) -> None:
    big = os.urandom(1024 * 1024 + 200 * 1024)  # the test server allows 1 MB
    reply = upload(server, "big.png", big)
    assert reply.status == 413
    assert not (server.base / "input" / "big.png").exists()


def test_upload_mask_copies_alpha_into_the_original(server: ServerProcess) -> None:
    original = png((90, 100, 110), size=(4, 4), text={"workflow": '{"nodes": []}', "prompt": "{}"})
    assert upload(server, "photo.png", original).status == 200
    mask_image = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    mask_image.putpixel((1, 2), (0, 0, 0, 0))
    out = io.BytesIO()
    mask_image.save(out, "PNG")
    reply = upload(server, "clipspace-mask.png", out.getvalue(), route="/upload/mask", type="input",
                   subfolder="clipspace",
                   original_ref='{"filename": "photo.png", "subfolder": "", "type": "input"}')
    assert reply.status == 200, reply.body
    assert reply.json() == {"name": "clipspace-mask.png", "subfolder": "clipspace", "type": "input"}
    merged = Image.open(server.base / "input" / "clipspace" / "clipspace-mask.png")
    assert merged.mode == "RGBA"
    assert merged.getpixel((0, 0)) == (90, 100, 110, 255) and merged.getpixel((1, 2)) == (90, 100, 110, 0)
    assert merged.text["workflow"] == '{"nodes": []}'
    missing = upload(server, "m.png", out.getvalue(), route="/upload/mask",
                     original_ref='{"filename": "nope.png", "type": "input"}')
    assert missing.status == 404
    escaping = upload(server, "m.png", out.getvalue(), route="/upload/mask",
                      original_ref='{"filename": "../user/diffloom.db", "type": "input"}')
    assert escaping.status == 400
    assert upload(server, "m.png", out.getvalue(), route="/upload/mask", original_ref="nope").status == 400
