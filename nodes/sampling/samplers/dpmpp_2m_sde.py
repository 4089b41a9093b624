"""dpmpp_2m_sde: the stochastic DPM-Solver++(2M) (midpoint or heun correction), with eta-scaled fresh noise.

ComfyUI draws this sampler's noise from a Brownian tree (torchsde); here each step draws one standard
normal from the seeded CPU noise stream. The steps never overlap, so the two have the same distribution,
but the images differ from ComfyUI's for the same seed.
"""

from __future__ import annotations

import math

import torch

from .base import Denoiser, NoisySampler, SamplerState

SOLVER_TYPES = ("midpoint", "heun")


class DPMPP2MSDE(NoisySampler):
    """k-diffusion's sample_dpmpp_2m_sde."""

    name = "dpmpp_2m_sde"
    default_solver_type = "midpoint"

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, solver_type: str | None = None) -> None:
        solver_type = self.default_solver_type if solver_type is None else solver_type
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"sampler {self.name!r}: solver_type is {solver_type!r}, must be one of {list(SOLVER_TYPES)}")
        super().__init__(eta, s_noise)
        self.solver_type = solver_type

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        old_denoised: torch.Tensor | None = state.history.get("old_denoised")  # type: ignore[assignment]
        h_last: float | None = state.history.get("h_last")  # type: ignore[assignment]
        noise = self._noise(state)
        h = h_last
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = self.eta * h
            decay = -math.expm1(-h - eta_h)
            x = (sigma_next / sigma) * math.exp(-eta_h) * x + decay * denoised
            if old_denoised is not None and h_last is not None:
                r = h_last / h
                if self.solver_type == "heun":
                    x = x + (decay / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * decay * (1 / r) * (denoised - old_denoised)
            if self.eta:
                x = x + noise.draw(x) * (sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * self.s_noise)
        return self._next(state, x, denoised, noise, history={"old_denoised": denoised, "h_last": h})


class DPMPP2MSDEGPU(DPMPP2MSDE):
    """ComfyUI's dpmpp_2m_sde_gpu differs only by generating its Brownian noise on the GPU; our noise is always CPU."""

    name = "dpmpp_2m_sde_gpu"


class DPMPP2MSDEHeun(DPMPP2MSDE):
    """dpmpp_2m_sde with the heun-type second-order correction."""

    name = "dpmpp_2m_sde_heun"
    default_solver_type = "heun"


class DPMPP2MSDEHeunGPU(DPMPP2MSDEHeun):
    """ComfyUI's dpmpp_2m_sde_heun_gpu differs only by its noise device; our noise is always CPU."""

    name = "dpmpp_2m_sde_heun_gpu"
