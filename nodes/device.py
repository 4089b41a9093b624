"""The one place that chooses where and in which dtype diffloom computes.

Nothing else in the code base names a device: everything asks `compute_device()`,
`compute_dtype()` or `offload_device()`. The choice is CUDA, then Apple MPS, then CPU,
and can be overridden (``--cpu``, ``--device``, ``DIFFLOOM_DEVICE``) before first use.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePolicy:
    """The device and dtypes of one process (or one worker), and the opt-in speed settings.

    The speed settings default to what measured fastest on CPUs (bench/results.md): torch's own
    thread count, the default (contiguous) memory format, eager execution.
    """

    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    threads: int | None = None     # torch intra-op threads; None keeps torch's default (the core count)
    channels_last: bool = False    # UNet weights in channels-last layout (slower on the CPUs measured)
    compile: bool = False          # torch.compile the UNet (minutes of compile on first use)

    def describe(self) -> dict[str, str]:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "vae_dtype": str(self.vae_dtype).removeprefix("torch.")}

    def tuning(self) -> dict[str, object]:
        """The speed settings in effect (benchmarks print them next to their figures)."""
        return {"threads": torch.get_num_threads(), "channels_last": self.channels_last, "compile": self.compile}


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


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"environment variable {name}={value!r} must be one of 1, true, yes, on, 0, false, no, off")


def _env_threads() -> int | None:
    value = os.environ.get("DIFFLOOM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"environment variable DIFFLOOM_THREADS={value!r} must be an integer >= 1")
    return int(value)


def configure(device: str | None = None, dtype: str | None = None, *, cpu: bool = False,
              threads: int | None = None, channels_last: bool | None = None,
              compile: bool | None = None) -> DevicePolicy:  # noqa: A002 - torch's own word for it
    """Fix the policy for this process; call before models load (the server does, from its flags).

    Unset arguments come from DIFFLOOM_DEVICE, DIFFLOOM_DTYPE, DIFFLOOM_THREADS,
    DIFFLOOM_CHANNELS_LAST and DIFFLOOM_COMPILE, then from the defaults.
    """
    global _policy
    requested = "cpu" if cpu else (device or os.environ.get("DIFFLOOM_DEVICE") or "")
    dev = torch.device(requested) if requested else best_device()
    dt = parse_dtype(dtype or os.environ.get("DIFFLOOM_DTYPE", "")) if (dtype or os.environ.get("DIFFLOOM_DTYPE")) else default_dtype(dev)
    # fp16 VAEs overflow to NaN on SD1/SDXL decodes; bf16 keeps the range, so only fp16 is widened.
    vae_dt = torch.float32 if dt == torch.float16 else dt
    threads = threads if threads is not None else _env_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"configure: threads is {threads}, must be >= 1")
        torch.set_num_threads(threads)
    channels_last = _env_flag("DIFFLOOM_CHANNELS_LAST") if channels_last is None else channels_last
    compile = _env_flag("DIFFLOOM_COMPILE") if compile is None else compile
    _policy = DevicePolicy(dev, dt, vae_dt, threads, bool(channels_last), bool(compile))
    return _policy


# A UNet with fewer bytes of weights than this samples on one CPU thread unless a thread count was set:
# its operations are too small to split (bench section 7: a tiny SD1 step on one thread instead of two
# was 1.5x faster on a 2-core Xeon and 3-3.8x on a 2-core EPYC, while a full-size SD1.5 step, 3.4 GB,
# was 1.7x slower on the Xeon). The UNet of diffloom's demo model has about 10 MB of weights in fp32.
SMALL_UNET_BYTES = 200 * 2**20


@contextmanager
def sampling_threads(unet_bytes: int) -> Iterator[None]:
    """One thread while a small UNet samples on the CPU; otherwise (or with a set thread count) no change."""
    current = policy()
    if current.device.type != "cpu" or current.threads is not None or unet_bytes >= SMALL_UNET_BYTES:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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


def prepare_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """The UNet to call for sampling under this policy: in channels-last layout and/or compiled if asked.

    Both are opt-in: on the CPUs measured, channels-last was slower and compiling took minutes.
    The compiled wrapper shares the module's parameters, so weight patches merged later still apply.
    """
    pol = policy()
    if pol.channels_last and not getattr(unet, "_diffloom_channels_last", False):
        unet.to(memory_format=torch.channels_last)
        unet._diffloom_channels_last = True  # type: ignore[assignment]
    if not pol.compile:
        return unet
    compiled = unet.__dict__.get("_diffloom_compiled")
    if compiled is None:
        compiled = torch.compile(unet)
        # Kept outside nn.Module's registry: as a submodule it would appear twice in parameters().
        object.__setattr__(unet, "_diffloom_compiled", compiled)
    return compiled
