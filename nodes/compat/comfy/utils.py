"""`comfy.utils` for plugins: the progress bar, image/latent resizing and safe model-file loading."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from graph import context
from graph.files import atomic_write
from nodes.tensors import bislerp, center_crop, resize_bchw

__all__ = ["PROGRESS_BAR_ENABLED", "ProgressBar", "bislerp", "common_upscale", "lanczos", "load_torch_file",
           "repeat_to_batch_size", "save_torch_file", "set_progress_bar_enabled", "state_dict_prefix_replace"]

PROGRESS_BAR_ENABLED = True
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos", "bislerp")
_SAFETENSORS = (".safetensors", ".sft")


def set_progress_bar_enabled(enabled: bool) -> None:
    """Turn the reports of every ProgressBar on or off (ComfyUI's switch for its console bars)."""
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = bool(enabled)


class ProgressBar:
    """ComfyUI's progress bar: each update becomes a `progress` event (and preview) of the running node.

    The node it reports for is fixed when the bar is made, so a bar updated from a helper thread
    still reaches the right client. Updating it also checks for an interrupt, as in ComfyUI.
    """

    def __init__(self, total: float, node_id: str | None = None) -> None:
        self.total = total
        self.current: float = 0
        self.node_id = node_id
        self._context = context.current()

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        if not PROGRESS_BAR_ENABLED:
            return
        token = context.set_current(self._context) if context.current() is None and self._context else None
        try:
            context.progress(self.current, self.total, preview, node_id=self.node_id)
        finally:
            if token is not None:
                context.reset_current(token)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [B,C,H,W] with a Lanczos filter."""
    return resize_bchw(samples, width, height, "lanczos")


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize [B,C,H,W] to width x height; `crop="center"` first cuts to the target's aspect ratio."""
    if upscale_method not in UPSCALE_METHODS:
        raise ValueError(f"common_upscale: upscale_method {upscale_method!r} is not one of {list(UPSCALE_METHODS)}")
    if crop not in ("disabled", "center"):
        raise ValueError(f"common_upscale: crop {crop!r} must be 'disabled' or 'center'")
    if crop == "center":
        samples = center_crop(samples, width, height)
    if upscale_method == "bislerp":
        return bislerp(samples, width, height)
    return resize_bchw(samples, width, height, upscale_method)


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """Cut or repeat `tensor` along `dim` to exactly batch_size entries."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        repeats = [1] * tensor.ndim
        repeats[dim] = math.ceil(batch_size / size)
        return tensor.repeat(repeats).narrow(dim, 0, batch_size)
    return tensor


def load_torch_file(ckpt: str | os.PathLike[str], safe_load: bool = False, device: Any = None,
                    return_metadata: bool = False) -> Any:
    """A model file's state dict (and metadata): safetensors read directly, pickles only weights-only.

    `safe_load` is accepted for compatibility; diffloom always loads safely and refuses pickles
    that would import code.
    """
    path = os.fspath(ckpt)
    metadata: dict[str, str] | None = None
    if path.lower().endswith(_SAFETENSORS):
        from safetensors import safe_open  # noqa: PLC0415

        target = str(device) if device is not None else "cpu"
        with safe_open(path, framework="pt", device=target) as handle:
            metadata = dict(handle.metadata() or {})
            sd = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a Mapping
    else:
        from nodes.models.safe_pickle import load_torch_file as load_pickle  # noqa: PLC0415

        loaded = load_pickle(path)
        sd = loaded["state_dict"] if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping) \
            else loaded
        if device is not None and isinstance(sd, Mapping):
            sd = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sd.items()}
    return (sd, metadata) if return_metadata else sd


def save_torch_file(sd: Mapping[str, torch.Tensor], ckpt: str | os.PathLike[str],
                    metadata: Mapping[str, str] | None = None) -> None:
    """Write a state dict as .safetensors, atomically."""
    from safetensors.torch import save  # noqa: PLC0415

    tensors = {k: v.contiguous() for k, v in sd.items()}
    atomic_write(ckpt, save(tensors, metadata=dict(metadata) if metadata else None))


def state_dict_prefix_replace(state_dict: dict[str, Any], replace_prefix: Mapping[str, str],
                              filter_keys: bool = False) -> dict[str, Any]:
    """Rename keys starting with each prefix; with `filter_keys` only renamed keys are kept (a new dict)."""
    out: dict[str, Any] = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out
