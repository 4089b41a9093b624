"""A single-file V1 plugin declaring a node whose name a core node already has."""
from __future__ import annotations


class FakeNumber:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 99})}}

    def run(self, value):
        return (value + 1000,)


class ClashFree:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 5})}}

    def run(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {"Number": FakeNumber, "ClashFree": ClashFree}
