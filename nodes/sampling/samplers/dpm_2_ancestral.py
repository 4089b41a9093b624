"""dpm_2_ancestral: the DPM-Solver-2 midpoint step down to sigma_down, then fresh noise of std sigma_up."""

from __future__ import annotations

import torch

from .base import AncestralSampler, Denoiser, log_midpoint, to_d


class DPM2Ancestral(AncestralSampler):
    """Ancestral DPM-Solver-2 (k-diffusion's sample_dpm_2_ancestral)."""

    name = "dpm_2_ancestral"
    discard_penultimate_sigma = True

    def _descend(self, denoise: Denoiser, x: torch.Tensor, sigma: float, sigma_down: float,
                 denoised: torch.Tensor) -> torch.Tensor:
        sigma_mid = log_midpoint(sigma, sigma_down)
        x_2 = x + to_d(x, sigma, denoised) * (sigma_mid - sigma)
        denoised_2 = self._denoise(denoise, x_2, sigma_mid)
        return x + to_d(x_2, sigma_mid, denoised_2) * (sigma_down - sigma)
