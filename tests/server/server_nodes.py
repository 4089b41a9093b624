"""Small pure-Python nodes for the server tests (no torch, no models): make, slow down, fail, save.

IMAGE here is a numpy array [B, H, W, 3] in 0..1, which is all these nodes and the preview encoder
need. The save node writes PNGs through `graph.files.atomic_write` into the folders of
`nodes.runtime`, as the built-in SaveImage does.
"""
from __future__ import annotations

import io
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from graph.context import progress
from graph.declare import Combo, Float, In, Int, String, node
from graph.files import atomic_write
from graph.nodedef import Result
from nodes.runtime import runtime

_counter = itertools.count(1)
_counter_lock = threading.Lock()


@node(category="test", outputs="IMAGE")
def TestImage(width: int = Int(8, min=1, max=256), height: int = Int(8, min=1, max=256),
              value: float = Float(0.5, min=0.0, max=1.0, step=0.01)) -> np.ndarray:
    """A flat grey image."""
    return np.full((1, height, width, 3), value, dtype=np.float32)


@node(category="test", outputs="IMAGE")
def TestSlow(images: np.ndarray = In("IMAGE"), steps: int = Int(4, min=1, max=10_000),
             delay: float = Float(0.01, min=0.0, max=10.0, step=0.01)) -> np.ndarray:
    """Report `steps` progress steps with a preview each, sleeping `delay` seconds per step."""
    for step in range(steps):
        time.sleep(delay)
        preview = Image.fromarray((images[0] * 255).astype(np.uint8), "RGB")
        progress(step + 1, steps, preview=preview)
    return images


@node(category="test", outputs="IMAGE")
def TestFail(images: np.ndarray = In("IMAGE"), message: str = String("boom")) -> np.ndarray:
    """Always raise, with `message`."""
    raise RuntimeError(message)


@node(category="test", output_node=True)
def TestSave(images: np.ndarray = In("IMAGE"), filename_prefix: str = String("test"),
             kind: str = Combo(["output", "temp"], default="output")) -> Result:
    """Write each image as a PNG into the output (or temp) folder."""
    folder = Path(runtime().folders.get_directory_by_type(kind))
    records = []
    for image in images:
        with _counter_lock:
            number = next(_counter)
        name = f"{filename_prefix}_{time.time_ns()}_{number:05}_.png"
        buffer = io.BytesIO()
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB").save(buffer, "PNG")
        atomic_write(folder / name, buffer.getvalue())
        records.append({"filename": name, "subfolder": "", "type": kind})
    return Result(ui={"images": records})


@node(category="test", output_node=True)
def TestShow(images: np.ndarray = In("IMAGE")) -> dict[str, Any]:
    """Report the image's shape as text (an output node that writes no file)."""
    return {"ui": {"text": [f"{list(images.shape)}"]}}
