"""Tests of the sigma schedules and of get_sigmas' ComfyUI conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch
from diffusers import DDIMScheduler

from nodes.sampling import SCHEDULER_NAMES, SCHEDULERS, DiscreteModelSampling, get_sigmas
from nodes.sampling.schedules import linear_quadratic
from tests.nodes.sampling.sampling_analytic import SD15_SCHEDULER_CONFIG

STEP_COUNTS = [1, 2, 3, 10, 33, 100]


@pytest.mark.parametrize("steps", STEP_COUNTS)
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_schedule_shape_order_and_end(ms: DiscreteModelSampling, name: str, steps: int) -> None:
    sigmas = SCHEDULERS[name](ms, steps)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1 and sigmas.device.type == "cpu"
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[:-1] > 0).all())
    assert bool((sigmas[1:] < sigmas[:-1]).all()), sigmas.tolist()
    if name == "ddim_uniform":
        stride = max(1000 // steps, 1)
        assert len(sigmas) == math.ceil(999 / stride) + 1
    elif name == "beta":
        assert 2 <= len(sigmas) <= steps + 1
    else:
        assert len(sigmas) == steps + 1


@pytest.mark.parametrize("steps", [2, 10, 33])
@pytest.mark.parametrize("name", ["normal", "karras", "exponential", "kl_optimal"])
def test_schedules_spanning_the_table(ms: DiscreteModelSampling, name: str, steps: int) -> None:
    sigmas = SCHEDULERS[name](ms, steps)
    assert float(sigmas[0]) == pytest.approx(ms.sigma_max, rel=1e-5)
    assert float(sigmas[-2]) == pytest.approx(ms.sigma_min, rel=1e-5)


@pytest.mark.parametrize("name", ["simple", "sgm_uniform", "beta", "linear_quadratic"])
def test_schedules_starting_at_sigma_max(ms: DiscreteModelSampling, name: str) -> None:
    assert float(SCHEDULERS[name](ms, 12)[0]) == pytest.approx(ms.sigma_max, rel=1e-5)


def test_karras_values(ms: DiscreteModelSampling) -> None:
    steps, rho = 12, 7.0
    ramp = np.linspace(0, 1, steps)
    lo, hi = ms.sigma_min ** (1 / rho), ms.sigma_max ** (1 / rho)
    expected = (hi + ramp * (lo - hi)) ** rho
    np.testing.assert_allclose(SCHEDULERS["karras"](ms, steps)[:-1].numpy(), expected, rtol=1e-5)


def test_normal_is_linear_in_timestep(ms: DiscreteModelSampling) -> None:
    sigmas = SCHEDULERS["normal"](ms, 9)
    np.testing.assert_allclose(ms.sigma_to_timestep(sigmas[:-1]).numpy(), np.linspace(999, 0, 9), atol=5e-3)


def test_sgm_uniform_is_linear_in_timestep_without_the_last_point(ms: DiscreteModelSampling) -> None:
    sigmas = SCHEDULERS["sgm_uniform"](ms, 9)
    np.testing.assert_allclose(ms.sigma_to_timestep(sigmas[:-1]).numpy(), np.linspace(999, 0, 10)[:-1], atol=5e-3)


def test_exponential_is_linear_in_log_sigma(ms: DiscreteModelSampling) -> None:
    sigmas = SCHEDULERS["exponential"](ms, 8)[:-1].double()
    expected = np.linspace(math.log(ms.sigma_max), math.log(ms.sigma_min), 8)
    np.testing.assert_allclose(sigmas.log().numpy(), expected, atol=1e-5)


def test_simple_takes_evenly_strided_table_entries(ms: DiscreteModelSampling) -> None:
    sigmas = SCHEDULERS["simple"](ms, 8)
    expected = [float(ms.sigmas[999 - int(k * 1000 / 8)]) for k in range(8)]
    assert sigmas[:-1].tolist() == expected


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_ddim_uniform_matches_diffusers_ddim_leading_timesteps(ms: DiscreteModelSampling, steps: int) -> None:
    ddim = DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG, timestep_spacing="leading")
    ddim.set_timesteps(steps)
    expected = ms.sigmas[ddim.timesteps.long()]
    sigmas = SCHEDULERS["ddim_uniform"](ms, steps)
    assert sigmas[:-1].tolist() == expected.tolist()


def test_beta_uses_the_inverse_regularized_incomplete_beta(ms: DiscreteModelSampling) -> None:
    steps = 10
    quantiles = 1 - np.arange(steps) / steps
    indices = np.rint(scipy.special.betaincinv(0.6, 0.6, quantiles) * 999).astype(int)
    assert SCHEDULERS["beta"](ms, steps)[:-1].tolist() == ms.sigmas[indices].tolist()


def test_beta_drops_repeated_indices(ms: DiscreteModelSampling) -> None:
    sigmas = SCHEDULERS["beta"](ms, 999)
    assert len(sigmas) < 1000
    assert len(set(sigmas.tolist())) == len(sigmas)


def test_linear_quadratic_levels(ms: DiscreteModelSampling) -> None:
    steps, threshold = 10, 0.025
    levels = 1.0 - (linear_quadratic(ms, steps) / ms.sigma_max).double().numpy()
    n_lin = steps // 2
    np.testing.assert_allclose(levels[:n_lin], threshold * np.arange(n_lin) / n_lin, atol=1e-6)
    # The rest is one quadratic through (n_lin, threshold) with slope threshold / n_lin, ending at 1.
    i = np.arange(n_lin, steps + 1)
    coeffs = np.polyfit(i, levels[n_lin:], 2)
    np.testing.assert_allclose(np.polyval(coeffs, i), levels[n_lin:], atol=1e-5)
    assert np.polyval(coeffs, n_lin) == pytest.approx(threshold, abs=1e-5)
    assert np.polyval(np.polyder(coeffs), n_lin) == pytest.approx(threshold / n_lin, abs=1e-4)
    assert levels[-1] == pytest.approx(1.0, abs=1e-7)


def test_kl_optimal_is_linear_in_arctan_sigma(ms: DiscreteModelSampling) -> None:
    sigmas = SCHEDULERS["kl_optimal"](ms, 7)[:-1].double()
    expected = np.linspace(math.atan(ms.sigma_max), math.atan(ms.sigma_min), 7)
    np.testing.assert_allclose(torch.atan(sigmas).numpy(), expected, atol=1e-6)


def test_get_sigmas_full_denoise_is_the_schedule(ms: DiscreteModelSampling) -> None:
    assert torch.equal(get_sigmas(ms, "karras", 15), SCHEDULERS["karras"](ms, 15))
    assert torch.equal(get_sigmas(ms, "karras", 15, sampler_name="euler"), SCHEDULERS["karras"](ms, 15))


@pytest.mark.parametrize(("steps", "denoise", "total"), [(10, 0.5, 20), (7, 0.3, 23), (4, 0.99, 4), (20, 0.75, 26)])
def test_get_sigmas_partial_denoise_keeps_the_tail(ms: DiscreteModelSampling, steps: int, denoise: float, total: int) -> None:
    sigmas = get_sigmas(ms, "normal", steps, denoise=denoise)
    assert len(sigmas) == steps + 1
    assert torch.equal(sigmas, SCHEDULERS["normal"](ms, total)[-(steps + 1):])


def test_get_sigmas_zero_denoise_is_empty(ms: DiscreteModelSampling) -> None:
    assert get_sigmas(ms, "normal", 10, denoise=0.0).shape == (0,)


@pytest.mark.parametrize("sampler_name", ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"])
def test_get_sigmas_discards_the_penultimate_sigma_for_some_samplers(ms: DiscreteModelSampling, sampler_name: str) -> None:
    sigmas = get_sigmas(ms, "karras", 10, sampler_name=sampler_name)
    extended = SCHEDULERS["karras"](ms, 11)
    assert torch.equal(sigmas, torch.cat([extended[:-2], extended[-1:]]))
    assert len(sigmas) == 11
    partial = get_sigmas(ms, "karras", 10, denoise=0.5, sampler_name=sampler_name)
    extended = SCHEDULERS["karras"](ms, 21)
    assert torch.equal(partial, torch.cat([extended[:-2], extended[-1:]])[-11:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheduler_name": "linear"}, r"scheduler is 'linear', must be one of \['simple', "),
        ({"sampler_name": "euler_a"}, r"sampler_name is 'euler_a', must be one of \['euler', "),
        ({"steps": 0}, "steps is 0, must be an int >= 1"),
        ({"denoise": 1.5}, r"denoise is 1.5, must be in \[0, 1\]"),
        ({"denoise": float("nan")}, "denoise is nan"),
    ],
)
def test_get_sigmas_rejects_bad_arguments(ms: DiscreteModelSampling, kwargs: dict, message: str) -> None:
    arguments = {"scheduler_name": "normal", "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        get_sigmas(ms, **arguments)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_schedules_reject_zero_steps(ms: DiscreteModelSampling, name: str) -> None:
    with pytest.raises(ValueError, match=f"scheduler '{name}': steps is 0"):
        SCHEDULERS[name](ms, 0)
