"""ComfyUI's `comfy` package as plugins import it, implemented on diffloom (`import comfy.utils`, ...).

Only the modules here exist: `comfy.utils`, `comfy.model_management`, `comfy.comfy_types`. A plugin
importing another part of ComfyUI (`comfy.sd`, `comfy.samplers`) fails to load with a message naming it.
"""
