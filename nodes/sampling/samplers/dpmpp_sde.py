"""dpmpp_sde: DPM-Solver++ SDE, a two-stage (r = 1/2) stochastic data-prediction step (k-diffusion's sample_dpmpp_sde).

Each stage adds fresh noise. The two noise increments are a Brownian path in sigma: the first covers
[sigma, sigma_s], the second [sigma, sigma_next], so they are correlated exactly as Brownian increments
over overlapping intervals (built here from two independent normals of the seeded CPU stream). ComfyUI
samples the same path with a torchsde Brownian tree, so images differ from ComfyUI's for the same seed.
"""

from __future__ import annotations

import math

from .base import Denoiser, NoisySampler, SamplerState, ancestral_step, to_d


class DPMPPSDE(NoisySampler):
    """k-diffusion's sample_dpmpp_sde: two denoiser calls per step, one on the final step to 0."""

    name = "dpmpp_sde"

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5) -> None:
        if not 0 < r < 1:
            raise ValueError(f"sampler {self.name!r}: r is {r!r}, must be in (0, 1)")
        super().__init__(eta, s_noise)
        self.r = r

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        noise = self._noise(state)
        if sigma_next == 0:
            x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
            return self._next(state, x, denoised, noise)
        # Times are lambda = -log(sigma).
        t, t_next = -math.log(sigma), -math.log(sigma_next)
        h = t_next - t
        sigma_s = math.exp(-(t + h * self.r))
        fac = 1 / (2 * self.r)

        # Stage 1: to sigma_s.
        sigma_down, sigma_up = ancestral_step(sigma, sigma_s, self.eta)
        x_2 = (sigma_down / sigma) * x - math.expm1(t + math.log(sigma_down)) * denoised
        z_1 = noise.draw(x)
        x_2 = x_2 + z_1 * (self.s_noise * sigma_up)
        denoised_2 = self._denoise(denoise, x_2, sigma_s)

        # Stage 2: to sigma_next.
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (sigma_down / sigma) * x - math.expm1(t + math.log(sigma_down)) * denoised_d
        z_2 = noise.draw(x)
        # Normalised Brownian increment over [sigma_next, sigma] that contains the stage-1 increment.
        first, second = sigma - sigma_s, sigma_s - sigma_next
        z = (math.sqrt(first) * z_1 + math.sqrt(second) * z_2) / math.sqrt(first + second)
        x = x + z * (self.s_noise * sigma_up)
        return self._next(state, x, denoised, noise)


class DPMPPSDEGPU(DPMPPSDE):
    """ComfyUI's dpmpp_sde_gpu differs only by generating its Brownian noise on the GPU; our noise is always CPU."""

    name = "dpmpp_sde_gpu"
