"""`comfy_api.latest`: ComfyUI's V3 plugin API (`ComfyExtension`, `io`, `ui`), implemented on diffloom.

A V3 plugin's module defines `comfy_entrypoint()` (sync or async) returning a `ComfyExtension`, whose
`get_node_list()` gives its `io.ComfyNode` classes; diffloom's plugin loader calls both.
"""
from __future__ import annotations

from . import _io as io
from . import _ui as ui


class ComfyExtension:
    """What `comfy_entrypoint()` returns: the plugin's nodes, and a hook that runs when it loads."""

    async def on_load(self) -> None:
        """Called once before get_node_list()."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        raise NotImplementedError(f"{type(self).__name__} must define get_node_list()")


__all__ = ["ComfyExtension", "io", "ui"]
