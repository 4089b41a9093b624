"""heun: Heun's second-order method on the probability-flow ODE (Euler for the final step to sigma 0)."""

from __future__ import annotations

from .base import Denoiser, Sampler, SamplerState, to_d


class Heun(Sampler):
    """Karras et al. (2022) Algorithm 2 without churn: two denoiser calls per step, one on the last step to 0."""

    name = "heun"

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        d = to_d(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = self._denoise(denoise, x_2, sigma_next)
            d_2 = to_d(x_2, sigma_next, denoised_2)
            x = x + (d + d_2) / 2 * dt
        return self._next(state, x, denoised)
