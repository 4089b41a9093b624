"""dpmpp_3m_sde: the stochastic third-order multistep DPM-Solver++ (k-diffusion's sample_dpmpp_3m_sde).

Warm-up with first then second order, third order afterwards, x0 itself on the final step to 0. As with
dpmpp_2m_sde, ComfyUI draws the noise from a torchsde Brownian tree; here each step draws one standard
normal from the seeded CPU stream (same distribution, different images for the same seed).
"""

from __future__ import annotations

import math

import torch

from .base import Denoiser, NoisySampler, SamplerState


class DPMPP3MSDE(NoisySampler):
    """Exponential-integrator step with phi_2/phi_3 corrections from the last three denoised values."""

    name = "dpmpp_3m_sde"

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        history = state.history
        denoised_1: torch.Tensor | None = history.get("denoised_1")  # type: ignore[assignment]
        denoised_2: torch.Tensor | None = history.get("denoised_2")  # type: ignore[assignment]
        h_1: float | None = history.get("h_1")  # type: ignore[assignment]
        h_2: float | None = history.get("h_2")  # type: ignore[assignment]
        noise = self._noise(state)
        h = h_1
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            h_eta = h * (self.eta + 1)
            # With eta = 1 the decay exp(-2h) is (sigma_next / sigma) * exp(-h).
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None and denoised_1 is not None and denoised_2 is not None and h_1 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None and denoised_1 is not None:
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            if self.eta:
                x = x + noise.draw(x) * (sigma_next * math.sqrt(-math.expm1(-2 * h * self.eta)) * self.s_noise)
        return self._next(
            state, x, denoised, noise,
            history={"denoised_1": denoised, "denoised_2": denoised_1, "h_1": h, "h_2": h_1},
        )


class DPMPP3MSDEGPU(DPMPP3MSDE):
    """ComfyUI's dpmpp_3m_sde_gpu differs only by generating its Brownian noise on the GPU; our noise is always CPU."""

    name = "dpmpp_3m_sde_gpu"
