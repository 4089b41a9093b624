"""Tests of the sampler and scheduler name lists and lookups."""

from __future__ import annotations

import pytest

from nodes.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, Sampler, get_sampler

# ComfyUI's lists (v0.3.64), from the contract document.
COMFY_SAMPLER_NAMES = (
    "euler euler_cfg_pp euler_ancestral euler_ancestral_cfg_pp heun heunpp2 dpm_2 dpm_2_ancestral lms dpm_fast "
    "dpm_adaptive dpmpp_2s_ancestral dpmpp_2s_ancestral_cfg_pp dpmpp_sde dpmpp_sde_gpu dpmpp_2m dpmpp_2m_cfg_pp "
    "dpmpp_2m_sde dpmpp_2m_sde_gpu dpmpp_2m_sde_heun dpmpp_2m_sde_heun_gpu dpmpp_3m_sde dpmpp_3m_sde_gpu ddpm lcm "
    "ipndm ipndm_v deis res_multistep res_multistep_cfg_pp res_multistep_ancestral res_multistep_ancestral_cfg_pp "
    "gradient_estimation gradient_estimation_cfg_pp er_sde seeds_2 seeds_3 sa_solver sa_solver_pece ddim uni_pc "
    "uni_pc_bh2"
).split()
COMFY_SCHEDULER_NAMES = "simple sgm_uniform karras exponential ddim_uniform beta normal linear_quadratic kl_optimal".split()
REQUIRED_SAMPLERS = (
    "euler euler_ancestral heun dpm_2 dpm_2_ancestral lms dpmpp_2m dpmpp_2m_sde dpmpp_sde dpmpp_2s_ancestral "
    "ddim uni_pc lcm ddpm"
).split()


def test_sampler_names_follow_comfyui_order_and_cover_the_required_set() -> None:
    assert set(REQUIRED_SAMPLERS) <= set(SAMPLER_NAMES)
    assert SAMPLER_NAMES == [name for name in COMFY_SAMPLER_NAMES if name in SAMPLER_NAMES]
    assert len(set(SAMPLER_NAMES)) == len(SAMPLER_NAMES)


def test_scheduler_names_are_comfyuis() -> None:
    assert SCHEDULER_NAMES == COMFY_SCHEDULER_NAMES


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_get_sampler_returns_a_fresh_sampler_of_that_name(name: str) -> None:
    sampler = get_sampler(name)
    assert isinstance(sampler, Sampler) and sampler.name == name
    assert get_sampler(name) is not sampler


def test_distinct_names_are_distinct_algorithms_or_documented_variants() -> None:
    classes = {name: type(get_sampler(name)) for name in SAMPLER_NAMES}
    assert len(set(classes.values())) == len(classes)


def test_get_sampler_passes_options() -> None:
    sampler = get_sampler("euler_ancestral", eta=0.5, s_noise=0.9)
    assert (sampler.eta, sampler.s_noise) == (0.5, 0.9)  # type: ignore[attr-defined]
    assert get_sampler("lms", order=3).order == 3  # type: ignore[attr-defined]
    assert get_sampler("dpmpp_2m_sde", solver_type="heun").solver_type == "heun"  # type: ignore[attr-defined]
    assert get_sampler("dpmpp_2m_sde_heun").solver_type == "heun"  # type: ignore[attr-defined]


def test_unknown_sampler_names_the_value_and_the_allowed_list() -> None:
    with pytest.raises(ValueError, match=r"sampler_name is 'euler_a', must be one of \['euler', 'euler_ancestral'"):
        get_sampler("euler_a")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("euler", {"eta": 1.0}, "sampler 'euler': bad options"),
        ("lms", {"order": 0}, "sampler 'lms': order is 0, must be an int >= 1"),
        ("dpmpp_2m_sde", {"solver_type": "rk4"}, "solver_type is 'rk4', must be one of"),
        ("dpmpp_sde", {"r": 1.5}, "r is 1.5, must be in"),
    ],
)
def test_bad_sampler_options_are_named(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_sampler(name, **options)
