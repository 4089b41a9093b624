"""lcm: Latent Consistency Model sampling: jump to the x0 prediction, then re-noise to the next sigma."""

from __future__ import annotations

from .base import Denoiser, Sampler, SamplerState


class LCM(Sampler):
    """k-diffusion-style LCM multistep sampling; the caller's denoiser must be an LCM (consistency) model."""

    name = "lcm"
    stochastic = True

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        denoised = self._denoise(denoise, state.x, sigma)
        x = denoised
        noise = self._noise(state)
        if sigma_next > 0:
            # The discrete models' noise scaling: latent + sigma * noise.
            x = denoised + noise.draw(denoised) * sigma_next
        return self._next(state, x, denoised, noise)
