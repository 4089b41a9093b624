"""What the model runtime lends the server: callables that may touch torch, provided by `server.py`.

`graph.server` never imports torch; everything that needs it (freeing models, memory figures,
device names, library versions) arrives here as a plain callable. Every field is optional, so a
server with pure-Python nodes (tests) runs without a model runtime.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ServerRuntime:
    """Hooks into the model runtime; each is called from the worker or an HTTP handler thread."""

    # free_models(unload_models, free_memory): drop models from memory (called between prompts).
    free_models: Callable[[bool, bool], None] | None = None
    # Model memory figures for /system_stats (loaded models, bytes per device, budgets).
    model_stats: Callable[[], dict[str, Any]] | None = None
    # ComfyUI's `devices` list: [{name, type, index, vram_total, vram_free, torch_vram_total, torch_vram_free}].
    devices: Callable[[], list[dict[str, Any]]] | None = None
    # Extra `system` fields: pytorch_version, diffusers_version, device and dtype...
    system_info: Callable[[], dict[str, Any]] | None = None
    # Run by the worker thread before its first prompt: imports the nodes make lazily (diffusers takes
    # seconds), so the server listens at once and only one thread ever imports them.
    warm_up: Callable[[], None] | None = None
    # Called with every failing prompt that ran out of memory (the executor's oom hooks get it too).
    on_out_of_memory: Callable[[], None] | None = None
    # Browser extensions of plugins: name -> folder served at /extensions/<name>/.
    extensions: dict[str, Path] = field(default_factory=dict)
