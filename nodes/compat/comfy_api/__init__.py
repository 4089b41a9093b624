"""ComfyUI's `comfy_api` package as V3 plugins import it: `comfy_api.latest` (`ComfyExtension`, `io`, `ui`)."""
