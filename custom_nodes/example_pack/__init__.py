"""diffloom's example plugin: copy this folder to start your own (see custom_nodes/README.md).

- ExampleBrightness  a pure node: same inputs, same output, so its result is cached.
- ExampleShowText    an output node: what it returns under `ui` appears in the editor.
- ExampleLoadText    reads a file from the input folder; its fingerprint re-runs it when the file changes.
- ExampleCountdown   a slow node with a progress bar, interrupt checks and messages to the web extension.
- web/example_pack.js  a browser extension, served at /extensions/example_pack/.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

from graph.api import (
    Combo,
    Float,
    In,
    Int,
    Result,
    String,
    check_interrupt,
    file_path,
    files,
    node,
    progress,
    send,
)

DIFFLOOM_API = "1.0"  # the plugin API this pack is written for
WEB_DIRECTORY = "web"  # served at /extensions/example_pack/


@node(category="example", outputs="IMAGE", display_name="Example: Brightness")
def ExampleBrightness(image: Any = In("IMAGE", tooltip="Images to brighten or darken."),
                      factor: float = Float(1.2, min=0.0, max=4.0, step=0.05,
                                            tooltip="1 keeps the image, 0 makes it black.")) -> Any:
    """Multiply the brightness of images."""
    return (image * factor).clamp(0.0, 1.0)


@node(category="example", output_node=True, display_name="Example: Show Text")
def ExampleShowText(text: str = In("STRING")) -> Result:
    """Show text on the node in the editor."""
    return Result(ui={"text": [text]})


def _text_files() -> list[str]:
    return [name for name in files("input") if name.lower().endswith(".txt")]


def _content_hash(file: str) -> str:
    """The fingerprint: the node runs again only when this changes."""
    return hashlib.sha256(file_path("input", file).read_bytes()).hexdigest()


@node(category="example", outputs="STRING", display_name="Example: Load Text", fingerprint=_content_hash)
def ExampleLoadText(file: str = Combo(_text_files, tooltip="A .txt file in the input folder.")) -> str:
    """Read a text file from the input folder."""
    return file_path("input", file).read_text(encoding="utf-8")


@node(category="example", outputs="STRING", display_name="Example: Countdown")
def ExampleCountdown(steps: int = Int(5, min=1, max=1000),
                     seconds_per_step: float = Float(0.1, min=0.0, max=10.0, step=0.1)) -> str:
    """Count down with a progress bar; stops at once when the prompt is interrupted."""
    for done in range(1, steps + 1):
        check_interrupt()
        time.sleep(seconds_per_step)
        progress(done, steps)
        send("example_pack.countdown", {"remaining": steps - done})
    return f"liftoff after {steps} steps"
