"""dpm_2_ancestral: the DPM-Solver-2 midpoint step down to sigma_down, then fresh noise of std sigma_up."""

from __future__ import annotations

from .base import Denoiser, Sampler, SamplerState, ancestral_step, log_midpoint, to_d


class DPM2Ancestral(Sampler):
    """Ancestral DPM-Solver-2 (k-diffusion's sample_dpm_2_ancestral)."""

    name = "dpm_2_ancestral"
    stochastic = True
    discard_penultimate_sigma = True

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0) -> None:
        self.eta = eta
        self.s_noise = s_noise

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        d = to_d(x, sigma, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            sigma_mid = log_midpoint(sigma, sigma_down)
            x_2 = x + d * (sigma_mid - sigma)
            denoised_2 = self._denoise(denoise, x_2, sigma_mid)
            x = x + to_d(x_2, sigma_mid, denoised_2) * (sigma_down - sigma)
        noise = self._noise(state)
        if sigma_next > 0:
            x = x + noise.draw(x) * (self.s_noise * sigma_up)
        return self._next(state, x, denoised, noise)
