"""A ComfyUI V1 plugin as people write them, loaded unchanged.

It uses what such plugins import from ComfyUI (folder_paths, comfy.utils, comfy.model_management,
comfy.comfy_types, comfy_execution, server.PromptServer, nodes.MAX_RESOLUTION) and the engine's
features: list mapping, lazy inputs, expansion, IS_CHANGED, VALIDATE_INPUTS, async nodes,
ExecutionBlocker, hidden inputs, progress, websocket messages, routes and a web directory.
"""
from __future__ import annotations

import asyncio
import time

import comfy.model_management
import comfy.utils
import folder_paths
import nodes
from aiohttp import web
from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict
from comfy_execution.graph import ExecutionBlocker
from comfy_execution.graph_utils import GraphBuilder
from server import PromptServer

from .lists import V1JoinWords, V1SplitWords, V1Upper

WEB_DIRECTORY = "./js"
CHANGES = {"token": 0}
CALLS: list[str] = []
ASYNC_LOG: list[tuple[str, str, float]] = []
CHECKPOINT_FOLDERS = folder_paths.get_folder_paths("checkpoints")


@PromptServer.instance.routes.get("/v1_pack/ping")
async def ping(request: web.Request) -> web.Response:
    return web.json_response({"pong": True, "nodes": sorted(NODE_CLASS_MAPPINGS)})


@PromptServer.instance.routes.post("/v1_pack/announce")
async def announce(request: web.Request) -> web.Response:
    PromptServer.instance.send_sync("v1_pack.announce", await request.json())
    return web.json_response({"sent": True})


@PromptServer.instance.routes.post("/v1_pack/stop")
async def stop(request: web.Request) -> web.Response:
    comfy.model_management.interrupt_current_processing()
    return web.json_response({"stopping": True})


class V1Number(ComfyNodeABC):
    CATEGORY = "v1_pack"
    DESCRIPTION = "A number"
    RETURN_TYPES = (IO.INT,)
    RETURN_NAMES = ("number",)
    OUTPUT_TOOLTIPS = ("the number you typed",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {"required": {"value": (IO.INT, {"default": 1, "min": 0, "max": nodes.MAX_RESOLUTION})}}

    def run(self, value):
        CALLS.append("V1Number")
        return (value,)


class V1Add:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"default": 0, "min": -1000})}}

    def add(self, a, b):
        CALLS.append("V1Add")
        return (a + b,)


class V1ShowText:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("STRING",)
    OUTPUT_NODE = True
    FUNCTION = "show"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)},
                "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def show(self, value, unique_id, prompt, extra_pnginfo):
        CALLS.append("V1ShowText")
        text = str(value)
        PromptServer.instance.send_sync("v1_pack.shown", {"node": unique_id, "text": text,
                                                          "nodes_in_prompt": len(prompt)})
        return {"ui": {"text": [text], "workflow_seen": [extra_pnginfo is not None]}, "result": (text,)}


class V1LazySwitch:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "pick"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"use_b": ("BOOLEAN", {"default": False}),
                             "a": ("INT", {"lazy": True, "forceInput": True}),
                             "b": ("INT", {"lazy": True, "forceInput": True})}}

    def check_lazy_status(self, use_b, a=None, b=None):
        return ["b"] if use_b else ["a"]

    def pick(self, use_b, a=None, b=None):
        return (b if use_b else a,)


class V1Multiply:
    """Expands into a chain of V1Add nodes that adds `value` to itself `times` times."""

    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "expand"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "times": ("INT", {"default": 2, "min": 1})}}

    def expand(self, value, times):
        graph = GraphBuilder()
        total = graph.node("V1Number", value=0)
        for _ in range(times):
            total = graph.node("V1Add", a=total.out(0), b=value)
        return {"result": (total.out(0),), "expand": graph.finalize()}


class V1Token:
    """Re-runs only when CHANGES['token'] changes (IS_CHANGED)."""

    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"default": "t"})}}

    @classmethod
    def IS_CHANGED(cls, label):
        return f"{label}:{CHANGES['token']}"

    def run(self, label):
        CALLS.append("V1Token")
        return (CHANGES["token"],)


class V1Even:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 2})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value % 2 == 0 else f"value must be even, got {value}"

    def run(self, value):
        return (value,)


class V1Sleep:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0}), "seconds": ("FLOAT", {"default": 0.1})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    async def run(self, value, seconds, unique_id):
        ASYNC_LOG.append((unique_id, "start", time.monotonic()))
        await asyncio.sleep(seconds)
        comfy.model_management.throw_exception_if_processing_interrupted()
        ASYNC_LOG.append((unique_id, "end", time.monotonic()))
        return (value,)


class V1Progress:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1}),
                             "delay": ("FLOAT", {"default": 0.0, "min": 0.0})}}

    def run(self, steps, delay):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            time.sleep(delay)
            bar.update(1)
        return (steps,)


class V1Gate:
    CATEGORY = "v1_pack"
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "block": ("BOOLEAN", {"default": True}),
                             "message": ("STRING", {"default": ""})}}

    def run(self, value, block, message):
        return (ExecutionBlocker(message or None) if block else value,)


class V1Everything:
    """Sets every class attribute a V1 node may set."""

    CATEGORY = "v1_pack/all"
    DESCRIPTION = "All the attributes"
    RETURN_TYPES = ("INT", "STRING")
    RETURN_NAMES = ("count", "label")
    OUTPUT_TOOLTIPS = ("calls so far", "the label")
    OUTPUT_IS_LIST = (False, False)
    FUNCTION = "run"
    OUTPUT_NODE = False
    INPUT_IS_LIST = False
    NOT_IDEMPOTENT = True
    DEPRECATED = True
    EXPERIMENTAL = True
    API_NODE = False
    DEV_ONLY = False
    HAS_INTERMEDIATE_OUTPUT = False
    SEARCH_ALIASES = ["everything", "all attributes"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"default": "x", "tooltip": "a label", "placeholder": "type"}),
                             "mode": ("COMBO", {"options": ["a", "b"], "default": "a"})},
                "optional": {"extra": ("INT", {"default": 1, "min": 0, "max": 9, "display": "slider"})}}

    def run(self, label, mode, extra=1):
        CALLS.append("V1Everything")
        return (CALLS.count("V1Everything"), f"{label}-{mode}-{extra}")


NODE_CLASS_MAPPINGS = {
    "V1Everything": V1Everything,
    "V1Number": V1Number, "V1Add": V1Add, "V1ShowText": V1ShowText, "V1LazySwitch": V1LazySwitch,
    "V1Multiply": V1Multiply, "V1Token": V1Token, "V1Even": V1Even, "V1Sleep": V1Sleep,
    "V1Progress": V1Progress, "V1Gate": V1Gate, "V1SplitWords": V1SplitWords, "V1Upper": V1Upper,
    "V1JoinWords": V1JoinWords,
}
NODE_DISPLAY_NAME_MAPPINGS = {"V1Number": "Number (V1)", "V1ShowText": "Show Text (V1)"}
