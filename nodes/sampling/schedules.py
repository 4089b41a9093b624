"""Sigma schedules under ComfyUI's names: ``f(model_sampling, steps) -> 1-D float32 CPU sigmas`` ending in 0.

Every schedule is descending and ends with 0.0. Most have ``steps + 1`` entries; ``ddim_uniform`` and
``beta`` follow the reference behaviour and may have a different length (see their docstrings).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .model_sampling import DiscreteModelSampling

Schedule = Callable[[DiscreteModelSampling, int], torch.Tensor]


def _check_steps(name: str, steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"scheduler {name!r}: steps is {steps!r}, must be an int >= 1")


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _timestep_linspace(model_sampling: DiscreteModelSampling, steps: int, sgm: bool) -> torch.Tensor:
    """Sigmas at timesteps spaced linearly from t(sigma_max) to t(sigma_min)."""
    start = float(model_sampling.timestep(model_sampling.sigma_max))
    end = float(model_sampling.timestep(model_sampling.sigma_min))
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
        return _append_zero(model_sampling.sigma(timesteps))
    if math.isclose(float(model_sampling.sigma(torch.tensor(end))), 0.0, abs_tol=1e-5):
        # A zero-terminal-SNR table already ends in 0: take one more point instead of appending one.
        return model_sampling.sigma(torch.linspace(start, end, steps + 1))
    return _append_zero(model_sampling.sigma(torch.linspace(start, end, steps)))


def normal(model_sampling: DiscreteModelSampling, steps: int) -> torch.Tensor:
    """``steps`` sigmas linear in timestep space from t(sigma_max) to t(sigma_min), then 0."""
    _check_steps("normal", steps)
    return _timestep_linspace(model_sampling, steps, sgm=False)


def sgm_uniform(model_sampling: DiscreteModelSampling, steps: int) -> torch.Tensor:
    """``steps + 1`` timesteps linear from t(sigma_max) to t(sigma_min), the last replaced by sigma 0 (SGM's uniform)."""
    _check_steps("sgm_uniform", steps)
    return _timestep_linspace(model_sampling, steps, sgm=True)


def karras(model_sampling: DiscreteModelSampling, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): sigma_i^(1/rho) linear from sigma_max^(1/rho) to sigma_min^(1/rho), then 0."""
    _check_steps("karras", steps)
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = model_sampling.sigma_min ** (1 / rho)
    max_inv_rho = model_sampling.sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(model_sampling: DiscreteModelSampling, steps: int) -> torch.Tensor:
    """log-sigma linear from log(sigma_max) to log(sigma_min), then 0."""
    _check_steps("exponential", steps)
    log_sigmas = torch.linspace(math.log(model_sampling.sigma_max), math.log(model_sampling.sigma_min), steps)
    return _append_zero(log_sigmas.exp())


def simple(model_sampling: DiscreteModelSampling, steps: int) -> torch.Tensor:
    """Table sigmas taken every ``len(table) / steps`` entries from the top, then 0."""
    _check_steps("simple", steps)
    table = model_sampling.sigmas
    stride = len(table) / steps
    picked = [float(table[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.tensor(picked + [0.0], dtype=torch.float32)


def ddim_uniform(model_sampling: DiscreteModelSampling, steps: int) -> torch.Tensor:
    """Table sigmas at timesteps 1, 1+k, 1+2k, ... (k = len(table) // steps) reversed, then 0.

    Like DDIM's "leading" spacing with offset 1. The length is ``ceil((len(table) - 1) / k) + 1``, which
    equals ``steps + 1`` only when ``k`` divides evenly enough (e.g. 20 steps: 21 sigmas; 30 steps: 32).
    """
    _check_steps("ddim_uniform", steps)
    table = model_sampling.sigmas
    picked: list[float] = []
    if math.isclose(float(table[1]), 0.0, abs_tol=1e-5):
        # Zero-terminal-SNR table: its own last entry is the 0.
        steps += 1
        tail: list[float] = []
    else:
        tail = [0.0]
    stride = max(len(table) // steps, 1)
    for t in range(1, len(table), stride):
        picked.append(float(table[t]))
    return torch.tensor(picked[::-1] + tail, dtype=torch.float32)


def beta(model_sampling: DiscreteModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Beta-distribution spacing (Lee et al. 2024): table index round(ppf(1 - i/steps) * (len-1)), then 0.

    Consecutive duplicate indices are dropped, so for very many steps the result can be shorter
    than ``steps + 1``.
    """
    _check_steps("beta", steps)
    table = model_sampling.sigmas
    last_index = len(table) - 1
    import scipy.stats  # noqa: PLC0415 - a second to import, and only this schedule needs it

    quantiles = 1.0 - np.linspace(0.0, 1.0, steps, endpoint=False)
    indices = np.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * last_index)
    picked: list[float] = []
    previous = -1.0
    for t in indices:
        if t != previous:
            picked.append(float(table[int(t)]))
        previous = t
    return torch.tensor(picked + [0.0], dtype=torch.float32)


def linear_quadratic(
    model_sampling: DiscreteModelSampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Mochi's schedule: noise level rises linearly to ``threshold_noise`` over the first half, then quadratically to 1.

    The quadratic part ``a i^2 + b i + c`` joins the linear part with equal value and slope at ``linear_steps``
    and reaches 1 at ``steps``; sigmas are ``(1 - level) * sigma_max``.
    """
    _check_steps("linear_quadratic", steps)
    if steps == 1:
        levels = [0.0, 1.0]
    else:
        n_lin = steps // 2 if linear_steps is None else linear_steps
        n_quad = steps - n_lin
        linear_part = [i * threshold_noise / n_lin for i in range(n_lin)]
        # Solving f(n_lin) = threshold, f'(n_lin) = threshold / n_lin, f(steps) = 1 for a, b, c:
        excess = n_lin - threshold_noise * steps
        a = excess / (n_lin * n_quad**2)
        b = threshold_noise / n_lin - 2 * excess / n_quad**2
        c = a * n_lin**2
        quadratic_part = [a * i**2 + b * i + c for i in range(n_lin, steps)]
        levels = linear_part + quadratic_part + [1.0]
    return torch.tensor([1.0 - level for level in levels], dtype=torch.float32) * model_sampling.sigma_max


def kl_optimal(model_sampling: DiscreteModelSampling, steps: int) -> torch.Tensor:
    """Align-Your-Steps' KL-optimal schedule: atan(sigma) linear from atan(sigma_max) to atan(sigma_min), then 0."""
    _check_steps("kl_optimal", steps)
    if steps == 1:
        return torch.tensor([model_sampling.sigma_max, 0.0], dtype=torch.float32)
    frac = torch.arange(steps, dtype=torch.float32) / (steps - 1)
    angles = frac * math.atan(model_sampling.sigma_min) + (1 - frac) * math.atan(model_sampling.sigma_max)
    return _append_zero(angles.tan())


# ComfyUI's SCHEDULER_NAMES order.
SCHEDULERS: dict[str, Schedule] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
