"""dpmpp_2m: DPM-Solver++(2M), the second-order multistep data-prediction solver (Lu et al. 2022)."""

from __future__ import annotations

import math

import torch

from .base import Denoiser, Sampler, SamplerState


class DPMPP2M(Sampler):
    """DPM-Solver++(2M) in k-diffusion form: first order on the first step and on the final step to 0."""

    name = "dpmpp_2m"

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        old_denoised: torch.Tensor | None = state.history.get("old_denoised")  # type: ignore[assignment]
        if sigma_next == 0:
            x = denoised
        else:
            # lambda = -log(sigma); h is the step in lambda.
            h = math.log(sigma) - math.log(sigma_next)
            if old_denoised is None:
                denoised_d = denoised
            else:
                h_last = math.log(float(state.sigmas[i - 1])) - math.log(sigma)
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
        return self._next(state, x, denoised, history={"old_denoised": denoised})
