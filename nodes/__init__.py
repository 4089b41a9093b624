"""diffloom's built-in nodes, grouped by stage, and model management.

`register_builtin_nodes(registry)` adds every built-in node. `MAX_RESOLUTION` is here because
ComfyUI plugins import it as `nodes.MAX_RESOLUTION`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from graph.schema import MAX_RESOLUTION

if TYPE_CHECKING:
    from graph.registry import NodeRegistry

# Stage modules, in the order their nodes appear in the editor's menus.
BUILTIN_MODULES = (
    "nodes.loaders",
    "nodes.text_nodes",
    "nodes.conditioning",
    "nodes.latent",
    "nodes.sampler_nodes",
    "nodes.controlnet_nodes",
    "nodes.vae_nodes",
    "nodes.image",
)

__all__ = ["BUILTIN_MODULES", "MAX_RESOLUTION", "register_builtin_nodes"]


def register_builtin_nodes(registry: NodeRegistry) -> NodeRegistry:
    """Import the stage modules and register their nodes (torch is imported here, not at `import nodes`)."""
    for name in BUILTIN_MODULES:
        registry.add_module(importlib.import_module(name), origin="diffloom")
    return registry
