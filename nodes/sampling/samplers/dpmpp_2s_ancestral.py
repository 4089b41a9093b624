"""dpmpp_2s_ancestral: DPM-Solver++(2S) single-step second order down to sigma_down, then fresh noise of std sigma_up."""

from __future__ import annotations

import math

from .base import Denoiser, Sampler, SamplerState, ancestral_step, to_d


class DPMPP2SAncestral(Sampler):
    """k-diffusion's sample_dpmpp_2s_ancestral (intermediate point at the lambda-midpoint, r = 1/2)."""

    name = "dpmpp_2s_ancestral"
    stochastic = True

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0) -> None:
        self.eta = eta
        self.s_noise = s_noise

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        if sigma_down == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        else:
            h = math.log(sigma) - math.log(sigma_down)
            sigma_s = math.exp(math.log(sigma) - 0.5 * h)
            x_2 = (sigma_s / sigma) * x - math.expm1(-0.5 * h) * denoised
            denoised_2 = self._denoise(denoise, x_2, sigma_s)
            x = (sigma_down / sigma) * x - math.expm1(-h) * denoised_2
        noise = self._noise(state)
        if sigma_next > 0:
            x = x + noise.draw(x) * (self.s_noise * sigma_up)
        return self._next(state, x, denoised, noise)
