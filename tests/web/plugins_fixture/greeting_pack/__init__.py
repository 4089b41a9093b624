"""A ComfyUI-style (V1) plugin whose node tells the browser it ran, through PromptServer.send_sync."""
from __future__ import annotations

from server import PromptServer

WEB_DIRECTORY = "./js"


class FixtureGreeting:
    """Greets someone: sends 'fixture.greeting' to the browser and shows the greeting on the node."""

    RETURN_TYPES = ()
    FUNCTION = "greet"
    OUTPUT_NODE = True
    CATEGORY = "fixture"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": "world"})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def greet(self, name, unique_id):
        greeting = f"hello {name}"
        PromptServer.instance.send_sync("fixture.greeting", {"node": unique_id, "greeting": greeting})
        return {"ui": {"text": [greeting]}}


NODE_CLASS_MAPPINGS = {"FixtureGreeting": FixtureGreeting}
NODE_DISPLAY_NAME_MAPPINGS = {"FixtureGreeting": "Fixture Greeting"}
