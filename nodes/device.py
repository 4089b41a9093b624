"""The one place that chooses where and in which dtype diffloom computes.

Nothing else in the code base names a device: everything asks `compute_device()`,
`compute_dtype()` or `offload_device()`. The choice is CUDA, then Apple MPS, then CPU,
and can be overridden (``--cpu``, ``--device``, ``DIFFLOOM_DEVICE``) before first use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePolicy:
    """The device and dtypes of one process (or one worker)."""

    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype

    def describe(self) -> dict[str, str]:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "vae_dtype": str(self.vae_dtype).removeprefix("torch.")}


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}

_policy: DevicePolicy | None = None


def best_device() -> torch.device:
    """CUDA, then MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPUs (bf16 where it is fast), fp32 on the CPU: bf16 is 2-3x slower on CPUs without AMX."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() and _ampere_or_newer() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _ampere_or_newer() -> bool:
    major, _ = torch.cuda.get_device_capability()
    return major >= 8


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"dtype {name!r} is not one of {sorted(set(_DTYPES))}") from None


def configure(device: str | None = None, dtype: str | None = None, *, cpu: bool = False) -> DevicePolicy:
    """Fix the policy for this process; call before models load (the server does, from its flags)."""
    global _policy
    requested = "cpu" if cpu else (device or os.environ.get("DIFFLOOM_DEVICE") or "")
    dev = torch.device(requested) if requested else best_device()
    dt = parse_dtype(dtype or os.environ.get("DIFFLOOM_DTYPE", "")) if (dtype or os.environ.get("DIFFLOOM_DTYPE")) else default_dtype(dev)
    # fp16 VAEs overflow to NaN on SD1/SDXL decodes; bf16 keeps the range, so only fp16 is widened.
    vae_dt = torch.float32 if dt == torch.float16 else dt
    _policy = DevicePolicy(dev, dt, vae_dt)
    return _policy


def policy() -> DevicePolicy:
    return _policy if _policy is not None else configure()


def compute_device() -> torch.device:
    return policy().device


def compute_dtype() -> torch.dtype:
    return policy().dtype


def vae_dtype() -> torch.dtype:
    return policy().vae_dtype


def offload_device() -> torch.device:
    """Where weights wait when they are not on the compute device."""
    return torch.device("cpu")


def noise_device() -> torch.device:
    """Initial noise is drawn on the CPU so a seed gives the same image on every device."""
    return torch.device("cpu")


def memory_stats() -> dict[str, int]:
    """Total and free memory of the compute device, in bytes (system RAM for the CPU)."""
    dev = compute_device()
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        return {"total": int(total), "free": int(free),
                "torch_total": int(torch.cuda.memory_reserved(dev)),
                "torch_free": int(torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))}
    import psutil  # noqa: PLC0415 - psutil ships with accelerate; only needed here

    vm = psutil.virtual_memory()
    return {"total": int(vm.total), "free": int(vm.available), "torch_total": int(vm.total), "torch_free": int(vm.available)}


def empty_cache() -> None:
    """Give cached allocator blocks back to the device."""
    dev = compute_device()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    elif dev.type == "mps":
        torch.mps.empty_cache()
