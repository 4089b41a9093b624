"""euler_ancestral: an Euler step down to sigma_down, then fresh noise of std sigma_up."""

from __future__ import annotations

import torch

from .base import AncestralSampler, Denoiser, to_d


class EulerAncestral(AncestralSampler):
    """Ancestral Euler sampling (k-diffusion's sample_euler_ancestral)."""

    name = "euler_ancestral"

    def _descend(self, denoise: Denoiser, x: torch.Tensor, sigma: float, sigma_down: float,
                 denoised: torch.Tensor) -> torch.Tensor:
        return x + to_d(x, sigma, denoised) * (sigma_down - sigma)
