"""A V1 plugin whose INPUT_TYPES raises when the loader reads it."""
from __future__ import annotations


class NeedsConfig:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        settings = {}
        return {"required": {"value": ("INT", {"default": settings["default"]})}}

    def run(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {"NeedsConfig": NeedsConfig}
