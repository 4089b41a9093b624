"""dpmpp_2s_ancestral: DPM-Solver++(2S) single-step second order down to sigma_down, then fresh noise of std sigma_up."""

from __future__ import annotations

import math

import torch

from .base import AncestralSampler, Denoiser


class DPMPP2SAncestral(AncestralSampler):
    """k-diffusion's sample_dpmpp_2s_ancestral (intermediate point at the lambda-midpoint, r = 1/2)."""

    name = "dpmpp_2s_ancestral"

    def _descend(self, denoise: Denoiser, x: torch.Tensor, sigma: float, sigma_down: float,
                 denoised: torch.Tensor) -> torch.Tensor:
        h = math.log(sigma) - math.log(sigma_down)
        sigma_s = math.exp(math.log(sigma) - 0.5 * h)
        x_2 = (sigma_s / sigma) * x - math.expm1(-0.5 * h) * denoised
        denoised_2 = self._denoise(denoise, x_2, sigma_s)
        return (sigma_down / sigma) * x - math.expm1(-h) * denoised_2
