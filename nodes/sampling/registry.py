"""Sampler and scheduler names as ComfyUI lists them (only what is implemented), and lookups by name."""

from __future__ import annotations

from typing import Any

import torch

from .model_sampling import DiscreteModelSampling
from .samplers import (
    DDIM, DDPM, DPM2, LCM, LMS, DPM2Ancestral, DPMPP2M, DPMPP2MSDE, DPMPP2MSDEGPU, DPMPP2MSDEHeun,
    DPMPP2MSDEHeunGPU, DPMPP2SAncestral, DPMPP3MSDE, DPMPP3MSDEGPU, DPMPPSDE, DPMPPSDEGPU, Euler,
    EulerAncestral, Heun, Sampler, UniPC, UniPCBH2,
)
from .schedules import SCHEDULERS

# In ComfyUI's SAMPLER_NAMES order.
SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (
        Euler, EulerAncestral, Heun, DPM2, DPM2Ancestral, LMS, DPMPP2SAncestral, DPMPPSDE, DPMPPSDEGPU, DPMPP2M,
        DPMPP2MSDE, DPMPP2MSDEGPU, DPMPP2MSDEHeun, DPMPP2MSDEHeunGPU, DPMPP3MSDE, DPMPP3MSDEGPU, DDPM, LCM,
        DDIM, UniPC, UniPCBH2,
    )
}

SAMPLER_NAMES: list[str] = list(SAMPLERS)
SCHEDULER_NAMES: list[str] = list(SCHEDULERS)


def get_sampler(name: str, **options: Any) -> Sampler:
    """A fresh sampler object for ``name``; ``options`` are its keyword parameters (eta, s_noise, order, ...)."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler_name is {name!r}, must be one of {SAMPLER_NAMES}")
    try:
        return SAMPLERS[name](**options)
    except TypeError as error:
        raise ValueError(f"sampler {name!r}: bad options {sorted(options)}: {error}") from error


def get_sigmas(
    model_sampling: DiscreteModelSampling,
    scheduler_name: str,
    steps: int,
    denoise: float = 1.0,
    sampler_name: str | None = None,
) -> torch.Tensor:
    """The sigmas ComfyUI's KSampler/BasicScheduler would use: schedule, denoise tail, sampler adjustment.

    ``denoise < 1`` computes ``int(steps / denoise)`` steps and keeps the last ``steps + 1`` sigmas;
    ``denoise <= 0`` gives an empty tensor (nothing to sample). With a ``sampler_name`` whose sampler
    discards the penultimate sigma (dpm_2, dpm_2_ancestral, uni_pc, uni_pc_bh2), each schedule is
    computed with one step more and its penultimate sigma dropped, as KSampler does; BasicScheduler
    (which knows no sampler) corresponds to ``sampler_name=None``.
    """
    if scheduler_name not in SCHEDULERS:
        raise ValueError(f"scheduler is {scheduler_name!r}, must be one of {SCHEDULER_NAMES}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps is {steps!r}, must be an int >= 1")
    if sampler_name is not None and sampler_name not in SAMPLERS:
        raise ValueError(f"sampler_name is {sampler_name!r}, must be one of {SAMPLER_NAMES}")
    denoise = float(denoise)
    if denoise != denoise or denoise > 1.0:
        raise ValueError(f"denoise is {denoise!r}, must be in [0, 1]")
    if denoise <= 0.0:
        return torch.zeros([0], dtype=torch.float32)
    total_steps = steps if denoise >= 1.0 else int(steps / denoise)
    discard = sampler_name is not None and SAMPLERS[sampler_name].discard_penultimate_sigma
    sigmas = SCHEDULERS[scheduler_name](model_sampling, total_steps + 1 if discard else total_steps)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas[-(steps + 1):]
