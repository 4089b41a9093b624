"""`comfy.model_management` basics for plugins: devices and dtypes (from `nodes.device`), interrupts, memory.

Interrupts act on the prompt that is running: inside a node they use that node's context; from
elsewhere (a plugin's HTTP route) they reach the server's worker through the handler the server
binds with `set_interrupt_handler`.
"""
from __future__ import annotations

from typing import Any

import torch

from graph import context
from graph.context import ExecutionInterrupted
from nodes import device as _device
from nodes.compat.interrupts import interrupt_outside_node, set_interrupt_handler

__all__ = [
    "InterruptProcessingException", "OOM_EXCEPTION", "cpu_mode", "get_free_memory", "get_torch_device",
    "get_torch_device_name", "get_total_memory", "intermediate_device", "interrupt_current_processing",
    "is_device_cpu", "is_device_cuda", "is_device_mps", "processing_interrupted", "set_interrupt_handler",
    "soft_empty_cache", "text_encoder_device", "text_encoder_offload_device", "throw_exception_if_processing_interrupted",
    "unet_dtype", "unet_offload_device", "vae_device", "vae_dtype", "vae_offload_device",
]

InterruptProcessingException = ExecutionInterrupted
OOM_EXCEPTION = torch.cuda.OutOfMemoryError

# ---- devices and dtypes --------------------------------------------------------------------------------

def get_torch_device() -> torch.device:
    return _device.compute_device()


def intermediate_device() -> torch.device:
    """Where nodes leave results between steps (images, latents handed on): the offload device."""
    return _device.offload_device()


def unet_offload_device() -> torch.device:
    return _device.offload_device()


def text_encoder_device() -> torch.device:
    return _device.compute_device()


def text_encoder_offload_device() -> torch.device:
    return _device.offload_device()


def vae_device() -> torch.device:
    return _device.compute_device()


def vae_offload_device() -> torch.device:
    return _device.offload_device()


def unet_dtype(*args: Any, **kwargs: Any) -> torch.dtype:
    """The compute dtype (ComfyUI's parameters about model size and supported dtypes are not needed here)."""
    return _device.compute_dtype()


def vae_dtype(*args: Any, **kwargs: Any) -> torch.dtype:
    return _device.vae_dtype()


def get_torch_device_name(device: torch.device | None = None) -> str:
    dev = device if device is not None else get_torch_device()
    if dev.type == "cuda":
        return f"{dev} {torch.cuda.get_device_name(dev)}"
    return str(dev)


def is_device_cpu(device: Any) -> bool:
    return getattr(device, "type", device) == "cpu"


def is_device_cuda(device: Any) -> bool:
    return getattr(device, "type", device) == "cuda"


def is_device_mps(device: Any) -> bool:
    return getattr(device, "type", device) == "mps"


def cpu_mode() -> bool:
    return get_torch_device().type == "cpu"


# ---- memory --------------------------------------------------------------------------------------------

def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> int | tuple[int, int]:
    """Free bytes on the compute device (and free bytes inside torch's cache when asked)."""
    stats = _device.memory_stats()
    return (stats["free"], stats["torch_free"]) if torch_free_too else stats["free"]


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> int | tuple[int, int]:
    stats = _device.memory_stats()
    return (stats["total"], stats["torch_total"]) if torch_total_too else stats["total"]


def soft_empty_cache(force: bool = False) -> None:
    """Give the allocator's cached blocks back to the device."""
    _device.empty_cache()


# ---- interrupts ----------------------------------------------------------------------------------------

def interrupt_current_processing(value: bool = True) -> None:
    """Ask the running prompt to stop (or, with False, withdraw the request)."""
    ctx = context.current()
    if ctx is not None:
        ctx.interrupt.set() if value else ctx.interrupt.clear()
    else:
        interrupt_outside_node(value)


def processing_interrupted() -> bool:
    ctx = context.current()
    return ctx is not None and ctx.interrupt.is_set()


def throw_exception_if_processing_interrupted() -> None:
    """Raise InterruptProcessingException if the user asked the running prompt to stop."""
    context.check_interrupt()
