"""Torch nodes for the resource-fault tests (loaded into a server with the built-in nodes via --extra-nodes).

`HardOutOfMemory` takes a MODEL (so a real checkpoint is loaded and held by the model manager) and
raises torch's own out-of-memory error when asked; `HardNoise` makes an incompressible image, so
that saving it needs as many bytes as it has pixels.
"""
from __future__ import annotations

from typing import Any

import torch

from graph.declare import Boolean, In, Int, node
from graph.nodedef import Result


@node(category="hardening", output_node=True)
def HardOutOfMemory(model: Any = In("MODEL"), fail: bool = Boolean(True)) -> Result:
    """Raise torch.OutOfMemoryError when `fail` (as a GPU that ran out would), else report the model."""
    if fail:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (hardening test)")
    return Result(ui={"text": [type(model).__name__]})


@node(category="hardening", outputs="IMAGE")
def HardNoise(width: int = Int(64, min=1, max=4096), height: int = Int(64, min=1, max=4096),
              batch_size: int = Int(1, min=1, max=8), seed: int = Int(0, min=0, max=2**31),
              flat_first: bool = Boolean(False)) -> torch.Tensor:
    """Uniform noise images [B, H, W, 3] (PNG cannot compress them); the first one flat grey if asked."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((batch_size, height, width, 3), generator=generator)
    if flat_first:
        images[0] = 0.5
    return images
