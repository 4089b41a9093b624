"""Sampling nodes on tiny real models: end to end, every sampler x schedule, step-level chains, parity with diffusers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from graph.executor import Executor
from nodes import loaders, sampler_nodes as S, text_nodes as T
from nodes.latent import EmptyLatentImage
from nodes.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, prepare_noise

from .conftest import txt2img
from .parity import assert_same_up_to_rounding


def load(name: str = "tiny-sd1.safetensors") -> tuple[Any, Any, Any]:
    return loaders.CheckpointLoaderSimple(ckpt_name=name)


def conds(clip: Any, pos: str = "a red circle", neg: str = "blurry") -> tuple[Any, Any]:
    return T.CLIPTextEncode(text=pos, clip=clip), T.CLIPTextEncode(text=neg, clip=clip)


@pytest.mark.parametrize("ckpt", ["tiny-sd1.safetensors", "tiny-sd2.safetensors", "tiny-sdxl.safetensors"])
def test_default_graph_makes_an_image(executor: Executor, runtime: Any, ckpt: str) -> None:
    events: list[str] = []
    result = executor.execute(txt2img(ckpt), "p", emit=lambda e, d: events.append(e))
    assert result.status == "success", result.error
    record = result.outputs["9"]["images"][0]
    image = Image.open(Path(runtime.folders.output_dir) / record["filename"])
    assert image.size == (64, 64)
    assert events.count("progress") == 3 and "preview" in events
    again = executor.execute(txt2img(ckpt), "p2")
    assert again.executed == []


def test_a_seed_change_reruns_only_the_sampler_onwards(executor: Executor) -> None:
    executor.execute(txt2img(seed=1), "a")
    result = executor.execute(txt2img(seed=2), "b")
    assert sorted(result.executed) == ["3", "8", "9"]


def test_loading_a_checkpoint_twice_loads_it_once(runtime: Any) -> None:
    before = runtime.models.loads
    load()
    load()
    assert runtime.models.loads - before <= 1


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_with_every_schedule(runtime: Any, sampler: str) -> None:
    model, clip, _ = load()
    positive, negative = conds(clip)
    latent = EmptyLatentImage(width=32, height=32, batch_size=1)
    outs = []
    for scheduler in SCHEDULER_NAMES:
        out = S.KSampler(model=model, seed=3, steps=2, cfg=2.0, sampler_name=sampler, scheduler=scheduler,
                         positive=positive, negative=negative, latent_image=latent, denoise=1.0)
        assert out["samples"].shape == (1, 4, 4, 4) and torch.isfinite(out["samples"]).all(), (sampler, scheduler)
        outs.append(out["samples"])
    assert not torch.equal(outs[0], outs[SCHEDULER_NAMES.index("karras")])


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "lms", "uni_pc", "heun"])
def test_step_nodes_chain_to_the_same_result_as_ksampler(runtime: Any, sampler: str) -> None:
    model, clip, _ = load()
    positive, negative = conds(clip)
    latent = EmptyLatentImage(width=32, height=32, batch_size=2)
    whole = S.KSampler(model=model, seed=7, steps=5, cfg=3.0, sampler_name=sampler, scheduler="karras",
                       positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    state = S.SamplingStart(model=model, seed=7, steps=5, sampler_name=sampler, scheduler="karras",
                            latent_image=latent, denoise=1.0)
    state = S.SamplingSteps(model=model, positive=positive, negative=negative, cfg=3.0, state=state, steps=2)
    assert state.state.step_index == 2
    state = S.SamplingSteps(model=model, positive=positive, negative=negative, cfg=3.0, state=state, steps=0)
    out, denoised = S.SamplingResult(model=model, state=state)
    assert torch.equal(out["samples"], whole["samples"])
    assert denoised["samples"].shape == out["samples"].shape


def test_prompt_switch_between_steps_changes_the_result(runtime: Any) -> None:
    model, clip, _ = load()
    a, neg = conds(clip, "a red circle")
    b, _ = conds(clip, "a blue square")
    latent = EmptyLatentImage(width=32, height=32, batch_size=1)
    start = S.SamplingStart(model=model, seed=1, steps=4, sampler_name="euler", scheduler="normal",
                            latent_image=latent, denoise=1.0)
    half = S.SamplingSteps(model=model, positive=a, negative=neg, cfg=5.0, state=start, steps=2)
    same = S.SamplingResult(model=model, state=S.SamplingSteps(model=model, positive=a, negative=neg, cfg=5.0,
                                                                 state=half, steps=0))[0]
    switched = S.SamplingResult(model=model, state=S.SamplingSteps(model=model, positive=b, negative=neg, cfg=5.0,
                                                                     state=half, steps=0))[0]
    assert not torch.allclose(same["samples"], switched["samples"])


def test_custom_sampler_nodes_match_ksampler(runtime: Any) -> None:
    model, clip, _ = load()
    positive, negative = conds(clip)
    latent = EmptyLatentImage(width=32, height=32, batch_size=1)
    whole = S.KSampler(model=model, seed=5, steps=3, cfg=4.0, sampler_name="dpmpp_2m", scheduler="normal",
                       positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    sigmas = S.BasicScheduler(model=model, scheduler="normal", steps=3, denoise=1.0)
    custom, _ = S.SamplerCustom(model=model, add_noise=True, noise_seed=5, cfg=4.0, positive=positive,
                                negative=negative, sampler=S.KSamplerSelect(sampler_name="dpmpp_2m"), sigmas=sigmas,
                                latent_image=latent)
    advanced, _ = S.SamplerCustomAdvanced(noise=S.RandomNoise(noise_seed=5),
                                          guider=S.CFGGuider(model=model, positive=positive, negative=negative, cfg=4.0),
                                          sampler=S.KSamplerSelect(sampler_name="dpmpp_2m"), sigmas=sigmas,
                                          latent_image=latent)
    assert torch.equal(custom["samples"], whole["samples"]) and torch.equal(advanced["samples"], whole["samples"])
    karras = S.KarrasScheduler(steps=4, sigma_max=14.6, sigma_min=0.03, rho=7.0)
    assert len(karras) == 5 and karras[0] == pytest.approx(14.6) and karras[-1] == 0


def test_ksampler_advanced_split_equals_one_run(runtime: Any) -> None:
    model, clip, _ = load()
    positive, negative = conds(clip)
    latent = EmptyLatentImage(width=32, height=32, batch_size=1)
    common = dict(model=model, noise_seed=9, steps=4, cfg=3.0, sampler_name="euler", scheduler="normal",
                  positive=positive, negative=negative)
    whole = S.KSamplerAdvanced(**common, add_noise="enable", latent_image=latent, start_at_step=0, end_at_step=10000,
                               return_with_leftover_noise="disable")
    first = S.KSamplerAdvanced(**common, add_noise="enable", latent_image=latent, start_at_step=0, end_at_step=2,
                               return_with_leftover_noise="enable")
    second = S.KSamplerAdvanced(**common, add_noise="disable", latent_image=first, start_at_step=2,
                                end_at_step=10000, return_with_leftover_noise="disable")
    assert torch.allclose(second["samples"], whole["samples"], atol=1e-5)


def test_cfg_one_skips_the_unconditional_pass(runtime: Any) -> None:
    model, clip, _ = load()
    positive, _ = conds(clip)
    calls: list[int] = []
    with model.use() as unet:
        handle = unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        S.KSampler(model=model, seed=1, steps=2, cfg=1.0, sampler_name="euler", scheduler="normal",
                   positive=positive, negative=positive, latent_image=EmptyLatentImage(width=32, height=32,
                                                                                        batch_size=1), denoise=1.0)
        assert calls == [1, 1]
        calls.clear()
        S.KSampler(model=model, seed=1, steps=2, cfg=2.0, sampler_name="euler", scheduler="normal",
                   positive=positive, negative=positive, latent_image=EmptyLatentImage(width=32, height=32,
                                                                                        batch_size=1), denoise=1.0)
        assert calls == [2, 2]  # cond and uncond batched into one call
    finally:
        handle.remove()


def test_parity_with_diffusers_stable_diffusion_pipeline(runtime: Any) -> None:
    """Same weights, seed, scheduler and steps give the same latents as diffusers' own pipeline."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    model, clip, vae = load()
    positive, negative = conds(clip, "a photo of a cat", "")
    latent = EmptyLatentImage(width=64, height=64, batch_size=1)
    ours = S.KSampler(model=model, seed=42, steps=4, cfg=5.0, sampler_name="euler", scheduler="simple",
                      positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    # ComfyUI's "simple" schedule takes table sigmas at integer timesteps: give diffusers those timesteps.
    from nodes.guidance import model_sampling

    ms = model_sampling(model)
    sigmas = S.BasicScheduler(model=model, scheduler="simple", steps=4, denoise=1.0)
    timesteps = [int(ms.timestep(s)) for s in sigmas[:-1]]
    # "leading" spacing makes diffusers start from noise * sqrt(sigma_max^2 + 1), as ComfyUI does at full denoise.
    scheduler = EulerDiscreteScheduler.from_config({**model.scheduler_config, "timestep_spacing": "leading"})
    with model.use() as unet, clip.use() as encoders, vae.use() as vae_module:
        pipe = StableDiffusionPipeline(vae=vae_module, text_encoder=encoders[0], tokenizer=clip.tokenizers[0],
                                       unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        noise = prepare_noise((1, 4, 8, 8), 42)
        theirs = pipe("a photo of a cat", negative_prompt="", timesteps=timesteps, guidance_scale=5.0,
                      latents=noise.clone(), output_type="latent", height=64, width=64).images
    theirs = theirs / vae_module.config.scaling_factor
    assert_same_up_to_rounding(ours["samples"], theirs)


def test_areas_masks_and_step_ranges_steer_sampling(runtime: Any) -> None:
    """Conditioning restricted to an area, a mask or a step range changes only what it should."""
    from nodes import conditioning as C

    model, clip, _ = load()
    red, neg = conds(clip, "a red circle")
    blue, _ = conds(clip, "a blue square")
    latent = EmptyLatentImage(width=64, height=64, batch_size=1)

    def run(positive: Any) -> torch.Tensor:
        return S.KSampler(model=model, seed=2, steps=3, cfg=4.0, sampler_name="euler", scheduler="normal",
                          positive=positive, negative=neg, latent_image=latent, denoise=1.0)["samples"]

    plain = run(red)

    def change(out: torch.Tensor) -> tuple[float, float]:
        """Mean change against the plain result in the left and the right half of the latent."""
        diff = (out - plain).abs()
        return float(diff[..., :4].mean()), float(diff[..., 4:].mean())

    # Blue only in the right half: the right half changes far more than the left (which moves only
    # because the red prediction sees the whole latent).
    right = C.ConditioningSetArea(conditioning=blue, width=32, height=64, x=32, y=0, strength=1.0)
    left_change, right_change = change(run(C.ConditioningCombine(conditioning_1=red, conditioning_2=right)))
    assert right_change > 3 * left_change > 0
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    masked = C.ConditioningSetMask(conditioning=blue, mask=mask, strength=1.0, set_cond_area="default")
    left_change, right_change = change(run(C.ConditioningCombine(conditioning_1=red, conditioning_2=masked)))
    assert right_change > 3 * left_change > 0
    # A conditioning whose step range excludes every step gives exactly the result without it.
    never = C.ConditioningSetTimestepRange(conditioning=blue, start=1.0, end=1.0)
    assert torch.equal(run(C.ConditioningCombine(conditioning_1=red, conditioning_2=never)), plain)
