"""List nodes of the V1 fixture plugin, in a sub-module (relative import)."""
from __future__ import annotations


class V1SplitWords:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("STRING",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "a b c", "multiline": True})}}

    def split(self, text):
        return (text.split(),)


class V1Upper:
    """Called once per list item."""

    CATEGORY = "v1_pack"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "upper"
    CALLS = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"word": ("STRING", {"forceInput": True})}}

    def upper(self, word):
        type(self).CALLS += 1
        return (word.upper(),)


class V1JoinWords:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("STRING",)
    INPUT_IS_LIST = True
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"words": ("STRING", {"forceInput": True}), "sep": ("STRING", {"default": "-"})}}

    def join(self, words, sep):
        return (sep[0].join(words),)
