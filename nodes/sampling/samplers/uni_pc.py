"""uni_pc and uni_pc_bh2: UniPC (Zhao et al. 2023), a multistep predictor-corrector in data prediction, order up to 3.

Written in sigma space with lambda = -log(sigma). Each step makes one denoiser call at the predicted
point, uses it to correct that point (UniC), then predicts the next point (UniP). As in ComfyUI, the
solver order is min(3, steps - 1) with lower orders on the first and last steps, the last step has no
corrector, and a final sigma of exactly 0 is replaced by 0.001 (so the result keeps a trace of noise).
"""

from __future__ import annotations

import math

import torch

from .base import Denoiser, Sampler, SamplerState

FINAL_SIGMA = 0.001
MAX_ORDER = 3


def solver_order(steps: int) -> int:
    """The UniPC order for a schedule of ``steps`` intervals (at least 1)."""
    return max(1, min(MAX_ORDER, steps - 1))


def update_order(target: int, steps: int) -> int:
    """The order of the update that lands on sigma index ``target`` (1..steps): warm-up, then lower near the end."""
    order = solver_order(steps)
    return target if target < order else min(order, steps + 1 - target)


class UniPCCoefficients:
    """The scalars of one UniPC update from sigma_s0 to sigma_t using ``order`` previous denoised values."""

    def __init__(self, sigma_t: float, previous_sigmas: list[float], order: int, variant: str) -> None:
        # previous_sigmas: newest first, previous_sigmas[0] is sigma_s0.
        lambda_t = -math.log(sigma_t)
        lambdas = [-math.log(s) for s in previous_sigmas[:order]]
        h = lambda_t - lambdas[0]
        hh = -h  # data prediction
        self.ratio = sigma_t / previous_sigmas[0]
        self.h_phi_1 = math.expm1(hh)
        self.b_h = hh if variant == "bh1" else math.expm1(hh)
        self.rks = [(lambdas[k] - lambdas[0]) / h for k in range(1, order)]
        rks = torch.tensor(self.rks + [1.0], dtype=torch.float64)
        h_phi_k = self.h_phi_1 / hh - 1
        factorial = 1
        b = []
        for i in range(1, order + 1):
            b.append(h_phi_k * factorial / self.b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        r_matrix = torch.stack([rks ** (i - 1) for i in range(1, order + 1)])
        b_vec = torch.tensor(b, dtype=torch.float64)
        if order == 1:
            self.rhos_p: list[float] = []
        elif order == 2:
            self.rhos_p = [0.5]
        else:
            self.rhos_p = torch.linalg.solve(r_matrix[:-1, :-1], b_vec[:-1]).tolist()
        self.rhos_c: list[float] = [0.5] if order == 1 else torch.linalg.solve(r_matrix, b_vec).tolist()


def _differences(denoised: tuple[torch.Tensor, ...], coeffs: UniPCCoefficients) -> list[torch.Tensor]:
    """D1_k = (m_k - m_0) / r_k for the older denoised values."""
    return [(denoised[k] - denoised[0]) / rk for k, rk in enumerate(coeffs.rks, start=1)]


def predict(x: torch.Tensor, denoised: tuple[torch.Tensor, ...], coeffs: UniPCCoefficients) -> torch.Tensor:
    """UniP: the predicted x at sigma_t from x at sigma_s0 and the previous denoised values (newest first)."""
    x_t = coeffs.ratio * x - coeffs.h_phi_1 * denoised[0]
    for rho, d1 in zip(coeffs.rhos_p, _differences(denoised, coeffs)):
        x_t = x_t - (coeffs.b_h * rho) * d1
    return x_t


def correct(
    x: torch.Tensor, denoised: tuple[torch.Tensor, ...], denoised_t: torch.Tensor, coeffs: UniPCCoefficients
) -> torch.Tensor:
    """UniC: the corrected x at sigma_t, given the denoised value at the predicted point."""
    x_t = coeffs.ratio * x - coeffs.h_phi_1 * denoised[0]
    for rho, d1 in zip(coeffs.rhos_c[:-1], _differences(denoised, coeffs)):
        x_t = x_t - (coeffs.b_h * rho) * d1
    return x_t - (coeffs.b_h * coeffs.rhos_c[-1]) * (denoised_t - denoised[0])


class UniPC(Sampler):
    """UniPC with the B(h) = h variant (bh1), as ComfyUI's uni_pc."""

    name = "uni_pc"
    variant = "bh1"
    discard_penultimate_sigma = True

    def _grid(self, sigmas: torch.Tensor) -> list[float]:
        grid = [float(s) for s in sigmas.tolist()]
        if grid[-1] == 0.0:
            grid[-1] = FINAL_SIGMA
        return grid

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        steps = state.total_steps
        grid = self._grid(state.sigmas)
        x = state.x
        denoised_i = self._denoise(denoise, x, grid[i])
        previous: tuple[torch.Tensor, ...] = state.history.get("denoised") or ()  # type: ignore[assignment]
        if i > 0:
            order = update_order(i, steps)
            coeffs = UniPCCoefficients(grid[i], grid[i - 1 :: -1], order, self.variant)
            x = correct(state.history["x_prev"], previous[:order], denoised_i, coeffs)  # type: ignore[arg-type]
        history = ((denoised_i,) + tuple(previous))[:MAX_ORDER]
        order = update_order(i + 1, steps)
        coeffs = UniPCCoefficients(grid[i + 1], grid[i::-1], order, self.variant)
        x_next = predict(x, history[:order], coeffs)
        return self._next(state, x_next, denoised_i, history={"x_prev": x, "denoised": history})


class UniPCBH2(UniPC):
    """UniPC with the B(h) = e^h - 1 variant (bh2), as ComfyUI's uni_pc_bh2."""

    name = "uni_pc_bh2"
    variant = "bh2"
