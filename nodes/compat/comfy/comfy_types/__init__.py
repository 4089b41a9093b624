"""`from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict`: typing helpers for V1 plugins."""
from __future__ import annotations

from .node_typing import IO, CheckLazyMixin, ComfyNodeABC, FileLocator, InputTypeDict, InputTypeOptions

__all__ = ["CheckLazyMixin", "ComfyNodeABC", "FileLocator", "IO", "InputTypeDict", "InputTypeOptions"]
