"""dpm_2: DPM-Solver-2 in k-diffusion form, a midpoint method with the midpoint taken in log-sigma."""

from __future__ import annotations

from .base import Denoiser, Sampler, SamplerState, log_midpoint, to_d


class DPM2(Sampler):
    """Second-order midpoint step through sqrt(sigma * sigma_next); Euler for the final step to 0."""

    name = "dpm_2"
    discard_penultimate_sigma = True

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        d = to_d(x, sigma, denoised)
        if sigma_next == 0:
            x = x + d * (sigma_next - sigma)
        else:
            sigma_mid = log_midpoint(sigma, sigma_next)
            x_2 = x + d * (sigma_mid - sigma)
            denoised_2 = self._denoise(denoise, x_2, sigma_mid)
            x = x + to_d(x_2, sigma_mid, denoised_2) * (sigma_next - sigma)
        return self._next(state, x, denoised)
