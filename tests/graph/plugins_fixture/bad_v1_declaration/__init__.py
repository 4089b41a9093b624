"""A V1 plugin with one good class and one whose RETURN_TYPES is a string: nothing of it may load."""
from __future__ import annotations


class FineNode:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1})}}

    def run(self, value):
        return (value,)


class BrokenNode:
    RETURN_TYPES = "IMAGE"
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return ()


NODE_CLASS_MAPPINGS = {"BadPackFine": FineNode, "BadPackBroken": BrokenNode}
