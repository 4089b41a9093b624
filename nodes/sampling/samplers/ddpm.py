"""ddpm: ancestral DDPM sampling (Ho et al. 2020) on arbitrary sigmas, with the "fixed small" posterior variance."""

from __future__ import annotations

import math

from .base import Denoiser, Sampler, SamplerState


class DDPM(Sampler):
    """Posterior mean plus posterior-std noise, worked in the variance-preserving space and mapped back to sigma space."""

    name = "ddpm"
    stochastic = True

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        eps = (x - denoised) / sigma
        x_vp = x / math.sqrt(1.0 + sigma**2)
        alpha_cumprod = 1.0 / (sigma**2 + 1.0)
        alpha_cumprod_next = 1.0 / (sigma_next**2 + 1.0)
        alpha = alpha_cumprod / alpha_cumprod_next
        mean = math.sqrt(1.0 / alpha) * (x_vp - ((1.0 - alpha) / math.sqrt(1.0 - alpha_cumprod)) * eps)
        noise = self._noise(state)
        if sigma_next > 0:
            std = math.sqrt((1.0 - alpha) * (1.0 - alpha_cumprod_next) / (1.0 - alpha_cumprod))
            mean = mean + noise.draw(x) * std
            x = mean * math.sqrt(1.0 + sigma_next**2)
        else:
            x = mean
        return self._next(state, x, denoised, noise)
