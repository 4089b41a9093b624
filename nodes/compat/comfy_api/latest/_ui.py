"""`comfy_api.latest.ui`: what a V3 node shows on itself (`io.NodeOutput(..., ui=ui.PreviewText("hi"))`)."""
from __future__ import annotations

import random
import string
from typing import Any


class _UIOutput:
    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class SavedResult(dict):
    """One file the node wrote: `{filename, subfolder, type}`."""

    def __init__(self, filename: str, subfolder: str = "", type: str = "output") -> None:  # noqa: A002 - V3's name
        super().__init__(filename=filename, subfolder=subfolder, type=type)


class SavedImages(_UIOutput):
    def __init__(self, results: list[SavedResult], is_animated: bool = False) -> None:
        self.results = list(results)
        self.is_animated = is_animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.results, "animated": [self.is_animated]}


class PreviewText(_UIOutput):
    def __init__(self, value: str, **_: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": [self.value]}


class PreviewImage(_UIOutput):
    """Images (a BHWC tensor) written to the temp folder and shown on the node, as PreviewImage does."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **_: Any) -> None:
        from nodes.image import save_images  # noqa: PLC0415 - torch, only when a node previews images

        hidden = getattr(cls, "hidden", None)
        prompt = getattr(hidden, "prompt", None)
        pnginfo = getattr(hidden, "extra_pnginfo", None)
        suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        self.values = save_images(image, f"ComfyUI_temp_{suffix}", "temp", prompt, pnginfo, 1)
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": [self.animated]}


__all__ = ["PreviewImage", "PreviewText", "SavedImages", "SavedResult"]
