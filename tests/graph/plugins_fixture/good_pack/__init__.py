"""A well-behaved diffloom-style plugin: pure, output, file-reading and progress nodes, a web extension."""
from __future__ import annotations

import hashlib
from pathlib import Path

from graph.api import In, Int, Result, String, check_interrupt, node, progress, send

from .words import Shout  # noqa: F401 - a node declared in a sub-module is registered too

DIFFLOOM_API = "1.0"
WEB_DIRECTORY = "web"
READS: list[str] = []


@node(category="good_pack", outputs="STRING")
def GoodGreet(name: str = String("world")) -> str:
    """Greet someone."""
    return f"hello {name}"


@node(category="good_pack", output_node=True)
def GoodShow(text: str = In("STRING")) -> Result:
    """Show text in the editor."""
    return Result(ui={"text": [text]})


def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@node(category="good_pack", outputs="STRING", fingerprint=_file_hash)
def GoodReadFile(path: str = String("")) -> str:
    """Read a text file; re-runs when the file's content changes."""
    READS.append(path)
    return Path(path).read_text(encoding="utf-8")


@node(category="good_pack", outputs="INT")
def GoodCount(steps: int = Int(3, min=1, max=100)) -> int:
    """Count with a progress bar."""
    for step in range(1, steps + 1):
        check_interrupt()
        progress(step, steps)
    send("good_pack.counted", {"steps": steps})
    return steps
