"""A V1 plugin that needs a part of ComfyUI diffloom does not provide."""
import comfy.sd  # noqa: F401

NODE_CLASS_MAPPINGS = {}
