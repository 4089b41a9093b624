"""Tests of the discrete sigma table and the k-diffusion parametrisation."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from nodes.sampling import DiscreteModelSampling
from tests.nodes.sampling.sampling_analytic import SD15_SCHEDULER_CONFIG, latent


def test_sigma_table_matches_diffusers_alphas_cumprod(ms: DiscreteModelSampling) -> None:
    reference = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    expected = ((1 - reference.alphas_cumprod) / reference.alphas_cumprod) ** 0.5
    assert ms.sigmas.shape == (1000,) and ms.sigmas.dtype == torch.float32
    torch.testing.assert_close(ms.sigmas, expected.float(), rtol=2e-5, atol=0)
    # The SD1.x table everyone quotes.
    assert ms.sigma_min == pytest.approx(0.029167159, rel=1e-6)
    assert ms.sigma_max == pytest.approx(14.614642, rel=1e-6)
    assert ms.sigma_min == float(ms.sigmas[0]) and ms.sigma_max == float(ms.sigmas[-1])
    assert bool((ms.sigmas[1:] > ms.sigmas[:-1]).all())


def test_linear_beta_schedule_matches_diffusers() -> None:
    config = dict(SD15_SCHEDULER_CONFIG, beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    ms = DiscreteModelSampling.from_config(config)
    reference = DDPMScheduler.from_config(config)
    torch.testing.assert_close(ms.betas.float(), reference.betas, rtol=1e-6, atol=0)
    expected = ((1 - reference.alphas_cumprod) / reference.alphas_cumprod) ** 0.5
    torch.testing.assert_close(ms.sigmas, expected.float(), rtol=1e-4, atol=0)


def test_sigma_of_integer_timestep_is_the_table_entry(ms: DiscreteModelSampling) -> None:
    t = torch.tensor([0.0, 1.0, 500.0, 998.0, 999.0])
    torch.testing.assert_close(ms.sigma(t), ms.sigmas[[0, 1, 500, 998, 999]], rtol=1e-6, atol=0)


def test_sigma_interpolates_log_sigma_between_entries(ms: DiscreteModelSampling) -> None:
    sigma = float(ms.sigma(torch.tensor(250.25)))
    expected = math.exp(0.75 * float(ms.log_sigmas[250]) + 0.25 * float(ms.log_sigmas[251]))
    assert sigma == pytest.approx(expected, rel=1e-6)
    # Outside the table it clamps.
    assert float(ms.sigma(torch.tensor(-5.0))) == pytest.approx(ms.sigma_min, rel=1e-6)
    assert float(ms.sigma(torch.tensor(2000.0))) == pytest.approx(ms.sigma_max, rel=1e-6)


def test_sigma_to_timestep_inverts_sigma(ms: DiscreteModelSampling) -> None:
    t = torch.tensor([0.0, 3.5, 120.2, 640.75, 998.9, 999.0])
    torch.testing.assert_close(ms.sigma_to_timestep(ms.sigma(t)), t, rtol=0, atol=2e-3)


def test_timestep_is_the_nearest_table_index(ms: DiscreteModelSampling) -> None:
    torch.testing.assert_close(ms.timestep(ms.sigmas[[0, 7, 999]]), torch.tensor([0.0, 7.0, 999.0]))
    # Slightly nearer entry 401 than 400 in log-sigma.
    between = ms.sigma(torch.tensor(400.6))
    assert float(ms.timestep(between)) == 401.0
    assert ms.timestep(torch.tensor(ms.sigma_max * 3)).item() == 999.0
    assert ms.timestep(torch.full((3,), 1.0)).shape == (3,)


def test_calculate_input_is_c_in_scaling(ms: DiscreteModelSampling) -> None:
    x = latent(0)
    sigma = torch.tensor([2.0, 0.5])
    expected = x / torch.sqrt(sigma**2 + 1).reshape(2, 1, 1, 1)
    torch.testing.assert_close(ms.calculate_input(sigma, x), expected)
    torch.testing.assert_close(ms.calculate_input(3.0, x), x / math.sqrt(10.0))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_calculate_denoised_recovers_x0_from_the_true_model_output(prediction_type: str) -> None:
    ms = DiscreteModelSampling.from_config(dict(SD15_SCHEDULER_CONFIG, prediction_type=prediction_type))
    x0, eps = latent(1), latent(2)
    sigma = torch.tensor([7.5, 0.3])
    s = sigma.reshape(2, 1, 1, 1)
    x = x0 + s * eps
    if prediction_type == "epsilon":
        output = eps
    else:
        # v = alpha_t * eps - sigma_t * x0 in the variance-preserving process.
        alpha_t, sigma_t = 1 / torch.sqrt(1 + s**2), s / torch.sqrt(1 + s**2)
        output = alpha_t * eps - sigma_t * x0
    torch.testing.assert_close(ms.calculate_denoised(sigma, output, x), x0, rtol=1e-5, atol=1e-5)


def test_noise_scaling_follows_max_denoise(ms: DiscreteModelSampling) -> None:
    noise, start = latent(3), latent(4)
    torch.testing.assert_close(ms.noise_scaling(2.0, noise, start, max_denoise=False), start + 2.0 * noise)
    full = ms.noise_scaling(ms.sigma_max, noise, start, max_denoise=True)
    torch.testing.assert_close(full, start + math.sqrt(1 + ms.sigma_max**2) * noise)
    assert ms.is_max_denoise(ms.sigma_max)
    assert ms.is_max_denoise(ms.sigma_max * (1 + 5e-6))
    assert ms.is_max_denoise(ms.sigma_max * 2)
    assert not ms.is_max_denoise(ms.sigma_max * 0.999)
    torch.testing.assert_close(ms.inverse_noise_scaling(0.0, start), start)


def test_percent_to_sigma(ms: DiscreteModelSampling) -> None:
    assert ms.percent_to_sigma(0.0) > 1e8
    assert ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.5) == pytest.approx(float(ms.sigma(torch.tensor(499.5))), rel=1e-6)
    assert ms.percent_to_sigma(0.25) > ms.percent_to_sigma(0.75)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"prediction_type": "sample"}, "prediction_type is 'sample'"),
        ({"beta_schedule": "squaredcos_cap_v2"}, "beta_schedule is 'squaredcos_cap_v2'"),
        ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ],
)
def test_unsupported_configs_are_named(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiscreteModelSampling.from_config(dict(SD15_SCHEDULER_CONFIG, **override))
