"""Image nodes: loading (alpha, masks, fingerprints), saving with metadata, transforms."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodes import image as I
from nodes import runtime as rt
from nodes.folders import FolderPaths


@pytest.fixture
def folders(tmp_path: Path) -> FolderPaths:
    fp = FolderPaths(tmp_path, create_dirs=True)
    rt.configure(fp)
    return fp


def test_load_image_gives_rgb_and_inverted_alpha_mask(folders: FolderPaths) -> None:
    pixels = np.zeros((6, 4, 4), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[..., 3] = 255
    pixels[:3, :, 3] = 0  # top half transparent
    Image.fromarray(pixels, "RGBA").save(Path(folders.input_dir) / "a.png")
    assert "a.png" in I.input_images()
    image, mask = I.LoadImage(image="a.png")
    assert image.shape == (1, 6, 4, 3) and image[0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert mask.shape == (1, 6, 4) and mask[0, 0, 0] == 1.0 and mask[0, 5, 0] == 0.0
    red = I.LoadImageMask(image="a.png", channel="red")
    assert red.shape == (1, 6, 4) and red.min() == 1.0
    assert I.LoadImageMask(image="a.png", channel="alpha")[0, 0, 0] == 1.0


def test_load_image_without_alpha_has_a_64px_empty_mask(folders: FolderPaths) -> None:
    Image.new("RGB", (10, 12), (0, 0, 255)).save(Path(folders.input_dir) / "b.jpg")
    image, mask = I.LoadImage(image="b.jpg")
    assert image.shape == (1, 12, 10, 3) and mask.shape == (1, 64, 64) and not mask.any()


def test_fingerprint_follows_file_content_and_validation_names_the_file(folders: FolderPaths) -> None:
    path = Path(folders.input_dir) / "c.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path)
    first = I.LoadImage.fingerprint({"image": "c.png"})
    Image.new("RGB", (4, 4), (9, 2, 3)).save(path)
    assert I.LoadImage.fingerprint({"image": "c.png"}) != first
    assert I.LoadImage.validate({"image": "c.png"}, {}) is True
    missing = I.LoadImage.validate({"image": "nope.png"}, {})
    assert "'nope.png', which is not a file in the input folder" in missing
    escape = I.LoadImage.validate({"image": "../secret.png"}, {})
    assert isinstance(escape, str) and "secret.png" in escape


def test_save_image_writes_numbered_pngs_with_metadata(folders: FolderPaths) -> None:
    images = torch.rand(2, 8, 8, 3)
    ui = I.SaveImage.call(None, {"images": images, "filename_prefix": "run/%width%px",
                                 "prompt": {"1": {"class_type": "X", "inputs": {}}},
                                 "extra_pnginfo": {"workflow": {"nodes": []}}}).ui
    assert ui == {"images": [{"filename": "8px_00001_.png", "subfolder": "run", "type": "output"},
                             {"filename": "8px_00002_.png", "subfolder": "run", "type": "output"}]}
    saved = Image.open(Path(folders.output_dir) / "run" / "8px_00002_.png")
    assert json.loads(saved.text["prompt"]) == {"1": {"class_type": "X", "inputs": {}}}
    assert json.loads(saved.text["workflow"]) == {"nodes": []}
    meta = json.loads(saved.text["diffloom"])
    assert {"diffloom", "torch", "diffusers", "device", "dtype"} <= set(meta)
    restored = np.asarray(saved, dtype=np.float32) / 255
    assert np.abs(restored - images[1].numpy()).max() <= 0.5 / 255 + 1e-6


def test_save_image_refuses_escaping_prefixes(folders: FolderPaths) -> None:
    with pytest.raises(ValueError, match="input 'filename_prefix' is '../evil'"):
        I.SaveImage.call(None, {"images": torch.rand(1, 4, 4, 3), "filename_prefix": "../evil",
                                "prompt": None, "extra_pnginfo": None})


def test_concurrent_saves_never_overwrite(folders: FolderPaths) -> None:
    names: list[str] = []
    lock = threading.Lock()

    def save() -> None:
        ui = I.SaveImage.call(None, {"images": torch.rand(3, 4, 4, 3), "filename_prefix": "race",
                                     "prompt": None, "extra_pnginfo": None}).ui
        with lock:
            names.extend(r["filename"] for r in ui["images"])

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == len(set(names)) == 12
    assert sorted(p.name for p in Path(folders.output_dir).glob("race_*_.png")) == sorted(names)


def test_preview_goes_to_temp(folders: FolderPaths) -> None:
    ui = I.PreviewImage.call(None, {"images": torch.rand(1, 4, 4, 3), "prompt": None, "extra_pnginfo": None}).ui
    record = ui["images"][0]
    assert record["type"] == "temp" and (Path(folders.temp_dir) / record["filename"]).is_file()


def test_transforms() -> None:
    img = torch.rand(2, 10, 20, 3)
    assert I.ImageScale(image=img, upscale_method="bilinear", width=0, height=5, crop="disabled").shape == (2, 5, 10, 3)
    assert I.ImageScale(image=img, upscale_method="lanczos", width=8, height=8, crop="center").shape == (2, 8, 8, 3)
    assert I.ImageScaleBy(image=img, upscale_method="area", scale_by=0.5).shape == (2, 5, 10, 3)
    assert torch.allclose(I.ImageInvert(image=img), 1 - img)
    assert I.ImageBatch(image1=img, image2=torch.rand(1, 30, 30, 3)).shape == (3, 10, 20, 3)
    assert I.EmptyImage(width=3, height=2, batch_size=2, color=0x0000FF)[1, 1, 2].tolist() == [0.0, 0.0, 1.0]
    padded, mask = I.ImagePadForOutpaint(image=img[:1], left=8, top=0, right=0, bottom=0, feathering=0)
    assert padded.shape == (1, 10, 28, 3) and padded[0, 0, 0, 0] == 0.5
    assert mask[0, 0, :8].eq(1).all() and not mask[0, :, 8:].any()
