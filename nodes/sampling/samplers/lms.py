"""lms: the linear multistep method on the probability-flow ODE (up to 4 previous derivatives)."""

from __future__ import annotations

import numpy as np
import torch

from .base import Denoiser, Sampler, SamplerState, to_d


def lms_coefficient(order: int, sigmas: list[float], i: int, j: int) -> float:
    """Integral over [sigma_i, sigma_{i+1}] of the Lagrange basis polynomial of node sigma_{i-j} on nodes sigma_i..sigma_{i-order+1}."""
    if not 0 <= j < order <= i + 1:
        raise ValueError(f"lms: need 0 <= j < order <= i + 1, got order={order}, i={i}, j={j}")
    nodes = [sigmas[i - k] for k in range(order)]

    def basis(tau: np.ndarray) -> np.ndarray:
        prod = np.ones_like(tau)
        for k in range(order):
            if k != j:
                prod = prod * (tau - nodes[k]) / (nodes[j] - nodes[k])
        return prod

    # Gauss-Legendre with `order` points integrates the degree order-1 polynomial exactly.
    points, weights = np.polynomial.legendre.leggauss(order)
    a, b = sigmas[i], sigmas[i + 1]
    tau = 0.5 * (b - a) * points + 0.5 * (a + b)
    return float(0.5 * (b - a) * np.sum(weights * basis(tau)))


class LMS(Sampler):
    """Linear multistep (k-diffusion's sample_lms): x += sum_j c_j d_{i-j}, with exact Lagrange-polynomial weights."""

    name = "lms"

    def __init__(self, order: int = 4) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"sampler 'lms': order is {order!r}, must be an int >= 1")
        self.order = order

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma = float(state.sigmas[i])
        x = state.x
        denoised = self._denoise(denoise, x, sigma)
        previous: tuple[torch.Tensor, ...] = state.history.get("derivatives") or ()  # type: ignore[assignment]
        derivatives = ((to_d(x, sigma, denoised),) + tuple(previous))[: self.order]
        order = min(i + 1, self.order, len(derivatives))
        sigmas = [float(s) for s in state.sigmas.tolist()]
        for j in range(order):
            x = x + lms_coefficient(order, sigmas, i, j) * derivatives[j]
        return self._next(state, x, denoised, history={"derivatives": derivatives})
