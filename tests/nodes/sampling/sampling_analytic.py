"""Analytic denoisers with known answers, shared by the sampling tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}

LATENT_SHAPE = (2, 4, 8, 8)


def latent(seed: int, shape: tuple[int, ...] = LATENT_SHAPE) -> torch.Tensor:
    """A reproducible standard-normal tensor."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class GaussianData:
    """Data x0 ~ N(mean, std^2) per element: the exact denoiser and the exact probability-flow ODE solution."""

    mean: float = 0.3
    std: float = 0.8

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x] for x = x0 + sigma * eps."""
        s = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1)).to(x.dtype)
        return self.mean + self.std**2 / (self.std**2 + s**2) * (x - self.mean)

    def denoise_scalar(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """E[x0 | x] at a Python-float sigma."""
        return self.mean + self.std**2 / (self.std**2 + sigma**2) * (x - self.mean)

    def epsilon(self, x_sigma: torch.Tensor, sigma: float) -> torch.Tensor:
        """The epsilon-prediction a perfect model makes for x (sigma space)."""
        return (x_sigma - self.denoise_scalar(x_sigma, sigma)) / sigma

    def ode_solution(self, x_start: torch.Tensor, sigma_start: float, sigma_end: float = 0.0) -> torch.Tensor:
        """Where the probability-flow ODE takes x_start: (x - mean) / sqrt(std^2 + sigma^2) is conserved."""
        scale = math.sqrt(self.std**2 + sigma_end**2) / math.sqrt(self.std**2 + sigma_start**2)
        return self.mean + (x_start - self.mean) * scale


def constant_denoiser(data: torch.Tensor):
    """A denoiser that always predicts ``data``."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],) and sigma.dtype == torch.float32
        return data.expand_as(x).clone()

    return denoise


def epsilon_model(data: GaussianData):
    """A perfect epsilon-prediction "UNet" for Gaussian data: takes the scaled model input and a sigma."""

    def model(x_in: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x_in.dtype)
        s = s.reshape(s.shape[:1] + (1,) * (x_in.ndim - 1)) if s.ndim else s
        x = x_in * torch.sqrt(s**2 + 1)
        return (x - (data.mean + data.std**2 / (data.std**2 + s**2) * (x - data.mean))) / s

    return model


def v_model(data: GaussianData):
    """A perfect v-prediction "UNet" for Gaussian data: v = alpha_t * eps - sigma_t * x0 (variance-preserving)."""
    eps_model = epsilon_model(data)

    def model(x_in: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x_in.dtype)
        s = s.reshape(s.shape[:1] + (1,) * (x_in.ndim - 1)) if s.ndim else s
        eps = eps_model(x_in, sigma)
        x = x_in * torch.sqrt(s**2 + 1)
        x0 = x - s * eps
        return (eps - s * x0) / torch.sqrt(s**2 + 1)

    return model
