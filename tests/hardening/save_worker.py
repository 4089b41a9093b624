"""A process that saves images through the real SaveImage code into a shared folder (for the race tests).

    python -m tests.hardening.save_worker OUTPUT_DIR PREFIX WORKER COUNT

Image i of worker w is one flat colour (w, i // 256, i % 256), so every file tells who wrote it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch


def colour_batch(worker: int, start: int, count: int) -> torch.Tensor:
    """`count` 8x8 images whose colour encodes (worker, index)."""
    images = torch.empty((count, 8, 8, 3))
    for k in range(count):
        index = start + k
        images[k] = torch.tensor([worker, index // 256, index % 256], dtype=torch.float32) / 255.0
    return images


def main(argv: list[str]) -> int:
    from nodes import runtime as node_runtime
    from nodes.folders import FolderPaths
    from nodes.image import save_images

    output, prefix, worker, count = Path(argv[0]), argv[1], int(argv[2]), int(argv[3])
    node_runtime.configure(FolderPaths(output.parent, output_dir=output), write_metadata=False)
    for start in range(0, count, 2):
        save_images(colour_batch(worker, start, min(2, count - start)), prefix, "output", None, None, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
