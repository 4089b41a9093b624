"""Discrete (DDPM-trained) model sampling: the 1000-entry sigma table and the k-diffusion parametrisation.

Sigma space ("k-diffusion" space): a noisy latent is ``x = x0 + sigma * eps``. A model trained on the
variance-preserving process ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` sees ``x_t = x / sqrt(sigma^2 + 1)``
with ``sigma_t = sqrt((1 - a_t) / a_t)``, where ``a_t`` is ``alphas_cumprod[t]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction")
BETA_SCHEDULES: tuple[str, ...] = ("scaled_linear", "linear")

# sigma_data of the k-diffusion parametrisation for SD-family latents.
SIGMA_DATA = 1.0


def _broadcast_sigma(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Shape a scalar or per-batch sigma so that it broadcasts against ``like`` ([B, ...])."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype if like.is_floating_point() else torch.float32,
                            device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


def make_betas(beta_schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    """The float64 beta schedule of a DDPM-trained model (diffusers naming)."""
    if beta_schedule == "scaled_linear":
        # diffusers' "scaled_linear" is what the original LDM code (and ComfyUI) call "linear".
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    raise ValueError(f"model sampling: beta_schedule is {beta_schedule!r}, must be one of {list(BETA_SCHEDULES)}")


class DiscreteModelSampling:
    """The sigma table of a discrete-time (1000-step) epsilon or v-prediction model and its conversions."""

    def __init__(self, betas: torch.Tensor, prediction_type: str = "epsilon") -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"model sampling: prediction_type is {prediction_type!r}, must be one of {list(PREDICTION_TYPES)}"
            )
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"model sampling: betas must be a 1-D tensor of length >= 2, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("model sampling: every beta must lie in (0, 1)")
        self.prediction_type = prediction_type
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas64 = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        # Stored in float32 like the reference implementation, with the log taken before rounding.
        self.sigmas: torch.Tensor = sigmas64.float()
        self.log_sigmas: torch.Tensor = sigmas64.log().float()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DiscreteModelSampling:
        """Build from a diffusers scheduler config (beta_start, beta_end, beta_schedule, num_train_timesteps, prediction_type)."""
        if config.get("rescale_betas_zero_snr", False):
            raise ValueError("model sampling: rescale_betas_zero_snr=True is not supported (its sigma_max is infinite)")
        if config.get("trained_betas") is not None:
            betas = torch.as_tensor(config["trained_betas"], dtype=torch.float64)
        else:
            steps = int(config.get("num_train_timesteps", 1000))
            betas = make_betas(
                str(config.get("beta_schedule", "scaled_linear")),
                float(config.get("beta_start", 0.00085)),
                float(config.get("beta_end", 0.012)),
                steps,
            )
        return cls(betas, str(config.get("prediction_type", "epsilon")))

    @property
    def num_train_timesteps(self) -> int:
        """Length of the sigma table."""
        return int(self.sigmas.shape[0])

    @property
    def sigma_min(self) -> float:
        """Smallest sigma of the table (timestep 0)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Largest sigma of the table (last timestep)."""
        return float(self.sigmas[-1])

    def timestep(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The timestep the model is fed for ``sigma``: the nearest table index in log-sigma (ComfyUI's rule)."""
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32)
        dists = sigma_t.detach().cpu().reshape(-1).log() - self.log_sigmas[:, None]
        index = dists.abs().argmin(dim=0).reshape(sigma_t.shape)
        return index.to(torch.float32).to(sigma_t.device)

    def sigma_to_timestep(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Fractional timestep of ``sigma`` by linear interpolation of log-sigma between table entries (clamped)."""
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma_t.detach().cpu().reshape(-1).log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.num_train_timesteps - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.reshape(sigma_t.shape).to(sigma_t.device)

    def sigma(self, timestep: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a (fractional) timestep, interpolating log-sigma linearly between table entries."""
        ts = torch.as_tensor(timestep)
        t = ts.detach().cpu().to(torch.float32).clamp(0, self.num_train_timesteps - 1)
        low_idx = t.floor().long()
        high_idx = t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp().to(ts.device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the way through sampling (0 = start, 1 = end), as ControlNet/timestep ranges use it."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * (self.num_train_timesteps - 1))))

    def calculate_input(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """The model input for ``x`` at ``sigma``: ``x * c_in`` with ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)``."""
        s = _broadcast_sigma(sigma, x)
        return x / (s**2 + SIGMA_DATA**2) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor | float, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The x0 prediction from a model output (epsilon or v) for ``x`` (sigma space) at ``sigma``."""
        s = _broadcast_sigma(sigma, x)
        if self.prediction_type == "epsilon":
            return x - model_output * s
        # v-prediction: c_skip = sd^2/(s^2+sd^2), c_out = -s*sd/sqrt(s^2+sd^2)
        var = s**2 + SIGMA_DATA**2
        return x * (SIGMA_DATA**2 / var) - model_output * (s * SIGMA_DATA / var**0.5)

    def is_max_denoise(self, sigma: torch.Tensor | float) -> bool:
        """True when sampling starts at (or above) sigma_max, i.e. from pure noise."""
        s = float(sigma)
        return math.isclose(s, self.sigma_max, rel_tol=1e-05) or s > self.sigma_max

    def noise_scaling(
        self, sigma: torch.Tensor | float, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False
    ) -> torch.Tensor:
        """The start latent: ``latent + noise * sigma``, or ``latent + noise * sqrt(1 + sigma^2)`` when max_denoise."""
        s = _broadcast_sigma(sigma, noise)
        scale = (1.0 + s**2) ** 0.5 if max_denoise else s
        return latent + noise * scale

    def inverse_noise_scaling(self, sigma: torch.Tensor | float, latent: torch.Tensor) -> torch.Tensor:
        """The latent returned after sampling; identity for epsilon and v models (sigma space is latent space)."""
        return latent
