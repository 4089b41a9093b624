"""euler_ancestral: an Euler step down to sigma_down, then fresh noise of std sigma_up."""

from __future__ import annotations

from .base import Denoiser, Sampler, SamplerState, ancestral_step, to_d


class EulerAncestral(Sampler):
    """Ancestral Euler sampling (k-diffusion's sample_euler_ancestral)."""

    name = "euler_ancestral"
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
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        noise = self._noise(state)
        if sigma_next > 0:
            x = x + noise.draw(x) * (self.s_noise * sigma_up)
        return self._next(state, x, denoised, noise)
