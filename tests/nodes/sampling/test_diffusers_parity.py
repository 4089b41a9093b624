"""Each sampler against the diffusers scheduler that computes the same update, on the same sigmas and model.

Our side sees the model through DiscreteModelSampling (c_in, epsilon -> x0), as a UNet wrapper would.
diffusers' side runs its own loop: scale_model_input, the epsilon model, step. Stochastic samplers get
diffusers' generator seeded with the same seed, since both draw one float32 randn per step from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)

from nodes.sampling import DiscreteModelSampling, get_sampler, get_sigmas
from tests.nodes.sampling.sampling_analytic import (
    SD15_SCHEDULER_CONFIG,
    GaussianData,
    epsilon_model,
    latent,
    v_model,
)

# diffusers' schedulers trip numpy 2 deprecations inside diffusers itself.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers"),
    # KDPM2's timestep interpolation hands torch tensors to numpy functions.
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning"),
]

DATA = GaussianData()
EPS = epsilon_model(DATA)
SEED = 1234


def our_denoiser(ms: DiscreteModelSampling) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The analytic epsilon model wrapped the way a UNet is: c_in scaling in, epsilon -> x0 out."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return ms.calculate_denoised(sigma, EPS(ms.calculate_input(sigma, x), sigma), x)

    return denoise


def ours(ms: DiscreteModelSampling, name: str, x: torch.Tensor, sigmas: torch.Tensor, **options: object) -> torch.Tensor:
    return get_sampler(name, **options).sample(our_denoiser(ms), x, sigmas, seed=SEED)


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(SEED)


def run_k_scheduler(scheduler, x: torch.Tensor, sigma_of: Callable[[object], float], **step_kwargs: object) -> torch.Tensor:
    """diffusers' loop for schedulers whose sample lives in sigma space."""
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        eps = EPS(model_input, sigma_of(scheduler))
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
    return x


def run_vp_scheduler(scheduler, x: torch.Tensor, sigmas: list[float], **step_kwargs: object) -> torch.Tensor:
    """diffusers' loop for variance-preserving schedulers; x and the result are in sigma space."""
    sample = x / math.sqrt(1 + sigmas[0] ** 2)
    for i, t in enumerate(scheduler.timesteps):
        eps = EPS(scheduler.scale_model_input(sample, t), sigmas[i])
        sample = scheduler.step(eps, t, sample, **step_kwargs).prev_sample
    return sample * math.sqrt(1 + sigmas[len(scheduler.timesteps)] ** 2)


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-4)


def distinct(sigmas: torch.Tensor) -> torch.Tensor:
    """The plain sigma schedule from a second-order scheduler's interleaved one."""
    return torch.unique_consecutive(sigmas.float())


@pytest.mark.parametrize("scheduler_name", ["karras", "normal", "exponential"])
def test_euler_matches_euler_discrete_on_our_sigmas(ms: DiscreteModelSampling, scheduler_name: str) -> None:
    sigmas = get_sigmas(ms, scheduler_name, 12)
    scheduler = EulerDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG)
    scheduler.set_timesteps(sigmas=sigmas.tolist())
    x = latent(40) * sigmas[0]
    expected = run_k_scheduler(scheduler, x, lambda s: float(s.sigmas[s.step_index]))
    assert_same(ours(ms, "euler", x, sigmas), expected)
    assert_same(ours(ms, "ddim", x, sigmas), expected)


def test_euler_ancestral_matches_euler_ancestral_discrete(ms: DiscreteModelSampling) -> None:
    scheduler = EulerAncestralDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG)
    scheduler.set_timesteps(12)
    sigmas = scheduler.sigmas.float()
    x = latent(41) * sigmas[0]
    expected = run_k_scheduler(scheduler, x, lambda s: float(s.sigmas[s.step_index]), generator=generator())
    assert_same(ours(ms, "euler_ancestral", x, sigmas), expected)


def test_heun_matches_heun_discrete(ms: DiscreteModelSampling) -> None:
    scheduler = HeunDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG, use_karras_sigmas=True)
    scheduler.set_timesteps(10)
    sigmas = distinct(scheduler.sigmas)
    x = latent(42) * sigmas[0]
    expected = run_k_scheduler(scheduler, x, lambda s: float(s.sigmas[s.step_index]))
    assert_same(ours(ms, "heun", x, sigmas), expected)


def kdpm2_sigma(scheduler) -> float:
    index = scheduler.step_index
    return float(scheduler.sigmas[index] if scheduler.state_in_first_order else scheduler.sigmas_interpol[index])


def test_dpm_2_matches_kdpm2_discrete(ms: DiscreteModelSampling) -> None:
    scheduler = KDPM2DiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG, use_karras_sigmas=True)
    scheduler.set_timesteps(10)
    sigmas = distinct(scheduler.sigmas)
    x = latent(43) * sigmas[0]
    expected = run_k_scheduler(scheduler, x, kdpm2_sigma)
    assert_same(ours(ms, "dpm_2", x, sigmas), expected)


def test_lms_matches_lms_discrete(ms: DiscreteModelSampling) -> None:
    scheduler = LMSDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG, use_karras_sigmas=True)
    scheduler.set_timesteps(12)
    sigmas = scheduler.sigmas.float()
    x = latent(44) * sigmas[0]
    expected = run_k_scheduler(scheduler, x, lambda s: float(s.sigmas[s.step_index]), order=4)
    assert_same(ours(ms, "lms", x, sigmas), expected)


def test_dpmpp_2m_matches_dpmsolver_multistep(ms: DiscreteModelSampling) -> None:
    scheduler = DPMSolverMultistepScheduler.from_config(
        SD15_SCHEDULER_CONFIG, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        use_karras_sigmas=True, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(12)
    sigmas = scheduler.sigmas.float()
    x = latent(45) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, sigmas.tolist())
    assert_same(ours(ms, "dpmpp_2m", x, sigmas), expected)


@pytest.mark.parametrize(("name", "solver_type"), [("dpmpp_2m_sde", "midpoint"), ("dpmpp_2m_sde_heun", "heun")])
def test_dpmpp_2m_sde_matches_sde_dpmsolver_multistep(ms: DiscreteModelSampling, name: str, solver_type: str) -> None:
    scheduler = DPMSolverMultistepScheduler.from_config(
        SD15_SCHEDULER_CONFIG, algorithm_type="sde-dpmsolver++", solver_order=2, solver_type=solver_type,
        use_karras_sigmas=True, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(12)
    sigmas = scheduler.sigmas.float()
    x = latent(46) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, sigmas.tolist(), generator=generator())
    assert_same(ours(ms, name, x, sigmas), expected)


def table_sigmas(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """A DDPM-style scheduler's sigmas at its integer timesteps, then 0."""
    alphas = scheduler.alphas_cumprod[timesteps.long()]
    return torch.cat([((1 - alphas) / alphas) ** 0.5, torch.zeros(1)]).float()


def test_ddim_matches_ddim_scheduler_with_eta_zero(ms: DiscreteModelSampling) -> None:
    scheduler = DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG, set_alpha_to_one=True, timestep_spacing="leading")
    scheduler.set_timesteps(20)
    sigmas = table_sigmas(scheduler, scheduler.timesteps)
    x = latent(47) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, sigmas.tolist(), eta=0.0)
    assert_same(ours(ms, "ddim", x, sigmas), expected)
    # ComfyUI's ddim_uniform gives those very sigmas.
    torch.testing.assert_close(get_sigmas(ms, "ddim_uniform", 20), sigmas, rtol=2e-5, atol=0)


def test_ddpm_matches_ddpm_scheduler(ms: DiscreteModelSampling) -> None:
    scheduler = DDPMScheduler.from_config(
        SD15_SCHEDULER_CONFIG, variance_type="fixed_small", clip_sample=False, timestep_spacing="leading"
    )
    scheduler.set_timesteps(15)
    sigmas = table_sigmas(scheduler, scheduler.timesteps)
    x = latent(48) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, sigmas.tolist(), generator=generator())
    assert_same(ours(ms, "ddpm", x, sigmas), expected)


@pytest.mark.parametrize(("name", "variant"), [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
@pytest.mark.parametrize("steps", [2, 3, 4, 10])
def test_uni_pc_matches_unipc_multistep(ms: DiscreteModelSampling, name: str, variant: str, steps: int) -> None:
    scheduler = UniPCMultistepScheduler.from_config(
        SD15_SCHEDULER_CONFIG, solver_order=3, solver_type=variant, predict_x0=True, lower_order_final=True,
        final_sigmas_type="sigma_min",
    )
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.float()
    assert float(sigmas[-1]) > 0  # so no 0 -> 0.001 substitution on our side
    x = latent(49) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, sigmas.tolist())
    assert_same(ours(ms, name, x, sigmas), expected)


def test_uni_pc_ends_a_zero_terminated_schedule_at_sigma_0_001(ms: DiscreteModelSampling) -> None:
    sigmas = get_sigmas(ms, "karras", 8, sampler_name="uni_pc")
    x = latent(50) * sigmas[0]
    stand_in = torch.cat([sigmas[:-1], torch.tensor([0.001])])
    assert torch.equal(ours(ms, "uni_pc", x, sigmas), ours(ms, "uni_pc", x, stand_in))


def test_dpm_2_ancestral_matches_kdpm2_ancestral_discrete(ms: DiscreteModelSampling) -> None:
    scheduler = KDPM2AncestralDiscreteScheduler.from_config(SD15_SCHEDULER_CONFIG)
    scheduler.set_timesteps(10)
    sigmas = distinct(scheduler.sigmas)
    x = latent(51) * sigmas[0]

    def sigma_of(s) -> float:
        index = s.step_index
        return float(s.sigmas[index] if s.state_in_first_order else s.sigmas_interpol[index - 1])

    expected = run_k_scheduler(scheduler, x, sigma_of, generator=generator())
    assert_same(ours(ms, "dpm_2_ancestral", x, sigmas), expected)


def test_dpmpp_2s_ancestral_without_noise_matches_second_order_dpmsolver_singlestep(ms: DiscreteModelSampling) -> None:
    """With eta = 0 it is DPM-Solver++(2S): singlestep order 2 through each lambda-midpoint, Euler to 0 at the end."""
    sigmas = get_sigmas(ms, "karras", 6)
    interleaved: list[float] = []
    for sigma, sigma_next in zip(sigmas[:-2].tolist(), sigmas[1:-1].tolist()):
        interleaved += [sigma, math.sqrt(sigma * sigma_next)]
    interleaved += [float(sigmas[-2]), 0.0]
    scheduler = DPMSolverSinglestepScheduler.from_config(
        SD15_SCHEDULER_CONFIG, solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(len(interleaved) - 1)
    assert scheduler.order_list == [1, 2] * 5 + [1]
    # Our schedule replaces diffusers' own; its timesteps only label the steps.
    scheduler.sigmas = torch.tensor(interleaved)
    x = latent(52) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, interleaved)
    assert_same(ours(ms, "dpmpp_2s_ancestral", x, sigmas, eta=0.0), expected)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
def test_v_prediction_models_match_diffusers(name: str) -> None:
    config = dict(SD15_SCHEDULER_CONFIG, prediction_type="v_prediction")
    ms = DiscreteModelSampling.from_config(config)
    model = v_model(DATA)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return ms.calculate_denoised(sigma, model(ms.calculate_input(sigma, x), sigma), x)

    sigmas = get_sigmas(ms, "karras", 10)
    x = latent(53) * sigmas[0]
    if name == "euler":
        scheduler = EulerDiscreteScheduler.from_config(config)
        scheduler.set_timesteps(sigmas=sigmas.tolist())
        sample = x
        for t in scheduler.timesteps:
            out = model(scheduler.scale_model_input(sample, t), float(scheduler.sigmas[scheduler.step_index]))
            sample = scheduler.step(out, t, sample).prev_sample
        expected = sample
    else:
        scheduler = DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True, final_sigmas_type="zero")
        scheduler.set_timesteps(10)
        sigmas = scheduler.sigmas.float()
        x = latent(53) * sigmas[0]
        sample = x / math.sqrt(1 + float(sigmas[0]) ** 2)
        for i, t in enumerate(scheduler.timesteps):
            sample = scheduler.step(model(sample, float(sigmas[i])), t, sample).prev_sample
        expected = sample
    assert_same(get_sampler(name).sample(denoise, x, sigmas), expected)


def test_dpmpp_3m_sde_without_noise_matches_third_order_dpmsolver_multistep(ms: DiscreteModelSampling) -> None:
    # 20 steps: below 15 diffusers also lowers the order of the penultimate step.
    scheduler = DPMSolverMultistepScheduler.from_config(
        SD15_SCHEDULER_CONFIG, algorithm_type="dpmsolver++", solver_order=3, solver_type="heun",
        use_karras_sigmas=True, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(20)
    sigmas = scheduler.sigmas.float()
    x = latent(54) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, sigmas.tolist())
    assert_same(ours(ms, "dpmpp_3m_sde", x, sigmas, eta=0.0), expected)


class ExactSDEThirdOrder(DPMSolverMultistepScheduler):
    """diffusers' SDE-DPM-Solver++(3M) with the second-difference weight of the exact integral.

    Integrating 2 exp(-2(h - u)) u^2 / 2 over [0, h] gives the D2 weight alpha_t * (0.5 - phi_2 / (2h)),
    phi_2 = 1 - (1 - exp(-2h)) / (2h), which k-diffusion uses; diffusers 0.42.1 writes -(0.5 + phi_2 / (2h)).
    The rest of the update is diffusers' own.
    """

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, sample=None, noise=None, **kwargs):
        i = self.step_index
        (alpha_t, sigma_t), (alpha_0, sigma_0), (alpha_1, sigma_1), (alpha_2, sigma_2) = (
            self._sigma_to_alpha_sigma_t(self.sigmas[k]) for k in (i + 1, i, i - 1, i - 2)
        )
        lambda_t, lambda_0 = torch.log(alpha_t / sigma_t), torch.log(alpha_0 / sigma_0)
        lambda_1, lambda_2 = torch.log(alpha_1 / sigma_1), torch.log(alpha_2 / sigma_2)
        h = lambda_t - lambda_0
        r0, r1 = (lambda_0 - lambda_1) / h, (lambda_1 - lambda_2) / h
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = torch.expm1(-2 * h) / (2 * h) + 1
        return (
            (sigma_t / sigma_0 * torch.exp(-h)) * sample
            - alpha_t * torch.expm1(-2 * h) * m0
            + alpha_t * phi_2 * d1
            + alpha_t * (0.5 - phi_2 / (2 * h)) * d2
            + sigma_t * torch.sqrt(-torch.expm1(-2 * h)) * noise
        )


def test_dpmpp_3m_sde_matches_sde_dpmsolver_multistep_with_the_exact_second_difference_weight(
    ms: DiscreteModelSampling,
) -> None:
    scheduler = ExactSDEThirdOrder.from_config(
        SD15_SCHEDULER_CONFIG, algorithm_type="sde-dpmsolver++", solver_order=3, solver_type="heun",
        use_karras_sigmas=True, final_sigmas_type="zero",
    )
    scheduler.set_timesteps(20)
    sigmas = scheduler.sigmas.float()
    x = latent(55) * sigmas[0]
    expected = run_vp_scheduler(scheduler, x, sigmas.tolist(), generator=generator())
    assert_same(ours(ms, "dpmpp_3m_sde", x, sigmas), expected)
