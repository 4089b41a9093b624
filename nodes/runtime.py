"""What built-in nodes need from the process they run in: folders, models, output settings.

The server (or the runner) configures one `Runtime` at start-up; nodes read it with `runtime()`.
It is process-wide on purpose: nodes are plain functions, and ComfyUI-style plugins expect
module-level folder functions too.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .folders import FolderPaths, default_folder_paths, set_default_folder_paths

if TYPE_CHECKING:
    from .models.manager import ModelManager


@dataclass
class Runtime:
    """Settings and shared services of this process."""

    folders: FolderPaths
    write_metadata: bool = True
    preview_method: str = "auto"  # none | auto | latent2rgb | taesd
    preview_max_size: int = 512
    _models: Any = field(default=None, repr=False)

    @property
    def models(self) -> ModelManager:
        if self._models is None:
            from .models.manager import ModelManager  # noqa: PLC0415 - heavy; only when a model is needed

            self._models = ModelManager()
        return self._models


_lock = threading.Lock()
_runtime: Runtime | None = None


def configure(folders: FolderPaths | None = None, **settings: Any) -> Runtime:
    """Set up the process-wide runtime (the server and the runner call this once)."""
    global _runtime
    with _lock:
        folders = folders or default_folder_paths()
        set_default_folder_paths(folders)
        models = settings.pop("models", None)
        _runtime = Runtime(folders=folders, _models=models, **settings)
        return _runtime


def runtime() -> Runtime:
    """The process-wide runtime, configured with defaults on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(folders=default_folder_paths())
        return _runtime


def import_model_libraries() -> None:
    """Import what the first prompt's model loading and sampling need (diffusers, transformers: seconds).

    Nodes import these libraries where they use them, so the server listens without waiting for them;
    its worker calls this before it takes a prompt, so the first prompt does not wait either.
    """
    import diffusers  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    # Both load their submodules on first attribute access.
    for name in ("UNet2DConditionModel", "AutoencoderKL", "ControlNetModel", "EulerDiscreteScheduler"):
        getattr(diffusers, name)
    for name in ("CLIPTextModel", "CLIPTokenizer"):
        getattr(transformers, name)
