"""Properties every sampler must have: convergence on analytic denoisers, chunking, determinism, protocol."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nodes.sampling import SAMPLER_NAMES, DiscreteModelSampling, SamplerState, get_sampler, get_sigmas, prepare_noise
from nodes.sampling.samplers.uni_pc import FINAL_SIGMA
from tests.nodes.sampling.sampling_analytic import GaussianData, constant_denoiser, latent

# diffusers' schedulers trip numpy 2 deprecations inside diffusers itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")

STOCHASTIC = [name for name in SAMPLER_NAMES if get_sampler(name).stochastic]
DETERMINISTIC = [name for name in SAMPLER_NAMES if not get_sampler(name).stochastic]
# Stochastic samplers whose noise can be switched off, and what they become.
ETA_ZERO = {
    "euler_ancestral": "euler",
    "dpm_2_ancestral": "dpm_2",
    "dpmpp_2s_ancestral": "dpmpp_2s_ancestral",
    "dpmpp_sde": "dpmpp_2s_ancestral",
    "dpmpp_2m_sde": "dpmpp_2m",
}
SECOND_ORDER = ["heun", "dpm_2", "lms", "dpmpp_2m", "uni_pc", "uni_pc_bh2"]
GAUSSIAN = GaussianData()
BIG_SHAPE = (4, 4, 32, 32)


def sigmas_for(ms: DiscreteModelSampling, name: str, steps: int, scheduler: str = "karras") -> torch.Tensor:
    return get_sigmas(ms, scheduler, steps, sampler_name=name)


def final_sigma(name: str, sigmas: torch.Tensor) -> float:
    """Where a sampler ends: 0, except UniPC's 0.001 stand-in for a final 0."""
    return FINAL_SIGMA if name.startswith("uni_pc") and float(sigmas[-1]) == 0 else float(sigmas[-1])


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_constant_data_is_reached(ms: DiscreteModelSampling, name: str) -> None:
    data = latent(10)
    sigmas = sigmas_for(ms, name, 8)
    x = data + latent(11) * sigmas[0]
    out = get_sampler(name).sample(constant_denoiser(data), x, sigmas, seed=4)
    # Point-mass data: x stays on the line data + sigma * eps, so it ends at data + sigma_end * eps.
    tolerance = 1e-5 + 4 * final_sigma(name, sigmas) * 4.5
    assert (out - data).abs().max() < tolerance


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_follow_the_straight_ode_path_of_point_mass_data(ms: DiscreteModelSampling, name: str) -> None:
    data, eps = latent(12), latent(13)
    sigmas = sigmas_for(ms, name, 6, scheduler="normal")
    sampler = get_sampler(name)
    state = sampler.init_state(data + eps * sigmas[0], sigmas)
    while not state.done:
        state = sampler.step(constant_denoiser(data), state)
        sigma = FINAL_SIGMA if name.startswith("uni_pc") and state.done else float(sigmas[state.step_index])
        torch.testing.assert_close(state.x, data + eps * sigma, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_keep_point_mass_marginals(ms: DiscreteModelSampling, name: str) -> None:
    """With data fixed at c the exact process has x = c + sigma * N(0, 1) at every sigma; each step must keep that."""
    data = torch.full(BIG_SHAPE, 0.25)
    sigmas = sigmas_for(ms, name, 6)
    sampler = get_sampler(name)
    state = sampler.init_state(data + prepare_noise(BIG_SHAPE, 3) * sigmas[0], sigmas, seed=8)
    while state.step_index < state.total_steps - 1:
        state = sampler.step(constant_denoiser(data), state)
        z = (state.x - data) / float(sigmas[state.step_index])
        assert abs(float(z.mean())) < 0.03
        assert abs(float(z.std()) - 1.0) < 0.03


@pytest.mark.parametrize(
    ("name", "options"),
    [(name, {}) for name in DETERMINISTIC] + [(name, {"eta": 0.0}) for name in [*ETA_ZERO, "dpmpp_3m_sde"]],
)
def test_ode_samplers_solve_the_gaussian_probability_flow(ms: DiscreteModelSampling, name: str, options: dict) -> None:
    sigmas = sigmas_for(ms, name, 40)
    x = latent(14) * sigmas[0]
    out = get_sampler(name, **options).sample(GAUSSIAN.denoise, x, sigmas)
    exact = GAUSSIAN.ode_solution(x, float(sigmas[0]), final_sigma(name, sigmas))
    tolerance = 0.2 if name in ("euler", "ddim", "euler_ancestral") else 0.02
    assert (out - exact).abs().max() < tolerance


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order_samplers_beat_euler_by_far(ms: DiscreteModelSampling, name: str) -> None:
    def error(sampler_name: str, steps: int) -> float:
        # End at sigma_min rather than 0: the final first-order jump to 0 would hide the order.
        sigmas = get_sigmas(ms, "exponential", steps)[:-1]
        x = latent(15) * sigmas[0]
        out = get_sampler(sampler_name).sample(GAUSSIAN.denoise, x, sigmas)
        return float((out - GAUSSIAN.ode_solution(x, float(sigmas[0]), float(sigmas[-1]))).abs().max())

    assert error(name, 20) < error("euler", 20) / 4
    # Quadrupling the steps gains far more than the 4x of a first-order method.
    assert error(name, 40) < error(name, 10) / 10


@pytest.mark.parametrize("name", [name for name in STOCHASTIC if name != "lcm"])
def test_stochastic_samplers_sample_the_gaussian_data(ms: DiscreteModelSampling, name: str) -> None:
    sigmas = sigmas_for(ms, name, 60)
    x = prepare_noise(BIG_SHAPE, 5) * sigmas[0]
    out = get_sampler(name).sample(GAUSSIAN.denoise, x, sigmas, seed=6)
    assert abs(float(out.mean()) - GAUSSIAN.mean) < 0.02
    assert abs(float(out.std()) - GAUSSIAN.std) < 0.07


@pytest.mark.parametrize(("name", "same_as"), [("ddpm", "euler_ancestral"), ("dpmpp_sde_gpu", "dpmpp_sde")])
def test_equivalent_formulations_agree(ms: DiscreteModelSampling, name: str, same_as: str) -> None:
    # DDPM's posterior step in the variance-preserving space is the ancestral Euler step in sigma space.
    sigmas = sigmas_for(ms, name, 12)
    x = latent(16) * sigmas[0]
    out = get_sampler(name).sample(GAUSSIAN.denoise, x, sigmas, seed=9)
    torch.testing.assert_close(out, get_sampler(same_as).sample(GAUSSIAN.denoise, x, sigmas, seed=9), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "deterministic"), ETA_ZERO.items())
def test_eta_zero_removes_the_noise(ms: DiscreteModelSampling, name: str, deterministic: str) -> None:
    sigmas = sigmas_for(ms, deterministic, 10)
    x = latent(17) * sigmas[0]
    extra = {"eta": 0.0} if deterministic in ETA_ZERO else {}
    expected = get_sampler(deterministic, **extra).sample(GAUSSIAN.denoise, x, sigmas)
    torch.testing.assert_close(get_sampler(name, eta=0.0).sample(GAUSSIAN.denoise, x, sigmas), expected, rtol=1e-5, atol=1e-5)


def test_lcm_jumps_to_the_prediction_and_renoises(ms: DiscreteModelSampling) -> None:
    sigmas = torch.tensor([10.0, 2.0, 0.0])
    data, x = latent(18), latent(19) * 10
    state = get_sampler("lcm").init_state(x, sigmas, seed=21)
    state = get_sampler("lcm").step(constant_denoiser(data), state)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(21))
    torch.testing.assert_close(state.x, data + 2.0 * noise)
    state = get_sampler("lcm").step(constant_denoiser(data), state)
    assert torch.equal(state.x, data)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_chunked_runs_equal_a_whole_run(ms: DiscreteModelSampling, name: str) -> None:
    sigmas = sigmas_for(ms, name, 9)
    x = latent(20) * sigmas[0]
    sampler = get_sampler(name)
    whole = sampler.sample(GAUSSIAN.denoise, x, sigmas, seed=33)
    for split in (0, 1, 4, 8, len(sigmas) - 1):
        first = get_sampler(name).run(GAUSSIAN.denoise, get_sampler(name).init_state(x, sigmas, seed=33), end=split)
        # The state crosses a "node boundary": a deep copy, then a fresh sampler object.
        second = get_sampler(name).run(GAUSSIAN.denoise, first.clone())
        assert torch.equal(second.x, whole), f"split at {split}"
    # Stepping one interval at a time through clones is the same too.
    state = sampler.init_state(x, sigmas, seed=33)
    while not state.done:
        state = get_sampler(name).step(GAUSSIAN.denoise, state.clone())
    assert torch.equal(state.x, whole)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_step_leaves_its_input_state_untouched(ms: DiscreteModelSampling, name: str) -> None:
    sigmas = sigmas_for(ms, name, 5)
    sampler = get_sampler(name)
    state = sampler.run(GAUSSIAN.denoise, sampler.init_state(latent(21) * sigmas[0], sigmas, seed=2), end=2)
    snapshot = state.clone()
    once = sampler.step(GAUSSIAN.denoise, state)
    twice = sampler.step(GAUSSIAN.denoise, state)
    assert torch.equal(once.x, twice.x)
    assert torch.equal(state.x, snapshot.x) and state.step_index == snapshot.step_index
    assert state.history.keys() == snapshot.history.keys()


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_seed_determinism(ms: DiscreteModelSampling, name: str) -> None:
    sigmas = sigmas_for(ms, name, 6)
    x = latent(22) * sigmas[0]
    first = get_sampler(name).sample(GAUSSIAN.denoise, x, sigmas, seed=2**64 - 1)
    again = get_sampler(name).sample(GAUSSIAN.denoise, x, sigmas, seed=2**64 - 1)
    other = get_sampler(name).sample(GAUSSIAN.denoise, x, sigmas, seed=1)
    assert torch.equal(first, again)
    assert torch.equal(first, other) != (name in STOCHASTIC)


def test_ancestral_noise_is_drawn_from_the_seeded_cpu_generator(ms: DiscreteModelSampling) -> None:
    """The first ancestral step adds sigma_up times the first randn of a generator seeded with the seed."""
    sigmas = torch.tensor([5.0, 3.0, 0.0])
    data, x = latent(23), latent(24) * 5
    state = get_sampler("euler_ancestral").step(constant_denoiser(data), get_sampler("euler_ancestral").init_state(x, sigmas, seed=77))
    sigma_up = (3.0**2 * (5.0**2 - 3.0**2) / 5.0**2) ** 0.5
    sigma_down = (3.0**2 - sigma_up**2) ** 0.5
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(77))
    torch.testing.assert_close(state.x, data + (x - data) * (sigma_down / 5.0) + noise * sigma_up)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_callback_sees_every_step_and_can_interrupt(ms: DiscreteModelSampling, name: str) -> None:
    sigmas = sigmas_for(ms, name, 5)
    x = latent(25) * sigmas[0]
    seen: list[tuple[int, int]] = []

    def record(i: int, total: int, x_i: torch.Tensor, denoised: torch.Tensor) -> None:
        assert x_i.shape == x.shape and denoised.shape == x.shape
        seen.append((i, total))

    out = get_sampler(name).sample(GAUSSIAN.denoise, x, sigmas, seed=1, callback=record)
    assert seen == [(i, len(sigmas) - 1) for i in range(len(sigmas) - 1)]
    assert out.shape == x.shape

    class Interrupted(Exception):
        pass

    def interrupt(i: int, total: int, x_i: torch.Tensor, denoised: torch.Tensor) -> None:
        if i == 2:
            raise Interrupted

    calls: list[int] = []

    def counting(x_in: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return GAUSSIAN.denoise(x_in, sigma)

    with pytest.raises(Interrupted):
        get_sampler(name).sample(counting, x, sigmas, seed=1, callback=interrupt)
    assert 3 <= len(calls) <= 6  # stopped after step 2: at most two denoiser calls per step


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_state_carries_the_last_prediction_and_the_dtype(ms: DiscreteModelSampling, name: str) -> None:
    sigmas = sigmas_for(ms, name, 4)
    x = (latent(26) * sigmas[0]).double()
    state = get_sampler(name).run(GAUSSIAN.denoise, get_sampler(name).init_state(x, sigmas, seed=3))
    assert state.done and state.step_index == state.total_steps == len(sigmas) - 1
    assert state.x.dtype == torch.float64 and state.denoised is not None and state.denoised.dtype == torch.float64
    assert state.sigma == float(sigmas[-1])


def test_protocol_errors_are_named(ms: DiscreteModelSampling) -> None:
    euler, heun = get_sampler("euler"), get_sampler("heun")
    sigmas = get_sigmas(ms, "normal", 2)
    x = latent(27) * sigmas[0]
    done = euler.run(GAUSSIAN.denoise, euler.init_state(x, sigmas))
    with pytest.raises(ValueError, match="state is at step 2 of 2, nothing left to run"):
        euler.step(GAUSSIAN.denoise, done)
    with pytest.raises(ValueError, match="sampler 'heun': state belongs to sampler 'euler'"):
        heun.step(GAUSSIAN.denoise, euler.init_state(x, sigmas))
    with pytest.raises(ValueError, match="only the last sigma may be 0"):
        euler.init_state(x, torch.tensor([3.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="sigmas must be a 1-D tensor"):
        euler.init_state(x, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="sigmas must be finite and >= 0"):
        euler.init_state(x, torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        euler.init_state(torch.zeros(2, dtype=torch.long), sigmas)
    with pytest.raises(ValueError, match="seed is -3"):
        get_sampler("euler_ancestral").init_state(x, sigmas, seed=-3)
    with pytest.raises(ValueError, match=r"end is 5, must be in \[0, 2\]"):
        euler.run(GAUSSIAN.denoise, euler.init_state(x, sigmas), end=5)
    with pytest.raises(ValueError, match=r"denoiser returned \(1,\), must return a tensor shaped like x"):
        euler.step(lambda x_in, sigma: torch.zeros(1), euler.init_state(x, sigmas))


def test_a_single_sigma_is_zero_steps(ms: DiscreteModelSampling) -> None:
    x = latent(28)
    state = get_sampler("dpmpp_2m").init_state(x, torch.tensor([0.0]))
    assert state.done and state.total_steps == 0
    assert torch.equal(get_sampler("dpmpp_2m").sample(GAUSSIAN.denoise, x, torch.tensor([0.0])), x)


def test_state_is_frozen(ms: DiscreteModelSampling) -> None:
    state = get_sampler("euler").init_state(latent(29), torch.tensor([1.0, 0.0]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.step_index = 3  # type: ignore[misc]
    assert isinstance(state, SamplerState)
