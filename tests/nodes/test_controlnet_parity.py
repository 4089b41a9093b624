"""ControlNet and SD 2 depth sampling give diffusers' own pipelines' latents on the same weights, seed and steps.

ComfyUI's ControlNetApplyAdvanced drives the negative pass too, and its strength multiplies every
residual: that is diffusers with `guess_mode=False` and `controlnet_conditioning_scale` = strength.
Sampling follows the lead's SD parity test: ComfyUI's "simple" schedule takes the sigma table at
integer timesteps, which diffusers' EulerDiscreteScheduler is given, and the same noise tensor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodes import controlnet_nodes as C, loaders, sampler_nodes as S, text_nodes as T
from nodes.guidance import model_sampling
from nodes.latent import EmptyLatentImage
from nodes.models.tiny_control import write_tiny_control_models, write_tiny_controlnet
from nodes.sampling import prepare_noise
from nodes.tensors import image_to_pil
from nodes.vae_nodes import VAEEncode
from tests.nodes.parity import assert_same_up_to_rounding

SECOND_CONTROLNET = "tiny-controlnet-sd1-b.safetensors"


@pytest.fixture(scope="module")
def control_models(model_base: Path) -> dict[str, str]:
    names = dict(write_tiny_control_models(model_base / "models"))
    second = model_base / "models" / "controlnet" / SECOND_CONTROLNET
    if not second.is_file():
        write_tiny_controlnet(second, "sd1", seed=1)
    names["second"] = SECOND_CONTROLNET
    return names


def _image(seed: int, size: int = 64) -> torch.Tensor:
    """An IMAGE whose values are exact 8-bit levels (so a PIL round trip is lossless)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, size, size, 3), generator=g).float() / 255.0


def _simple_timesteps(model: Any, steps: int) -> list[int]:
    ms = model_sampling(model)
    sigmas = S.BasicScheduler(model=model, scheduler="simple", steps=steps, denoise=1.0)
    return [int(ms.timestep(s)) for s in sigmas[:-1]]


def _sd1(runtime: Any) -> tuple[Any, Any, Any, Any, Any]:
    model, clip, vae = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sd1.safetensors")
    positive = T.CLIPTextEncode(text="a red circle on a blue square", clip=clip)
    negative = T.CLIPTextEncode(text="blurry", clip=clip)
    return model, clip, vae, positive, negative


def _controlnet_pipeline(model: Any, unet: Any, clip: Any, encoders: Any, vae: Any, controlnet: Any) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline

    # "leading" spacing makes diffusers start from noise * sqrt(sigma_max^2 + 1), as ComfyUI does at full denoise.
    scheduler = EulerDiscreteScheduler.from_config({**model.scheduler_config, "timestep_spacing": "leading"})
    pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=encoders[0], tokenizer=clip.tokenizers[0],
                                             unet=unet, controlnet=controlnet, scheduler=scheduler,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_one_controlnet_matches_stable_diffusion_controlnet_pipeline(runtime: Any, control_models: dict[str, str]) -> None:
    model, clip, vae, positive, negative = _sd1(runtime)
    controlnet = C.ControlNetLoader(control_net_name=control_models["controlnet"])
    hint = _image(1)
    pos, neg = C.ControlNetApplyAdvanced(positive=positive, negative=negative, control_net=controlnet, image=hint,
                                         strength=0.7, start_percent=0.0, end_percent=1.0, vae=None)
    ours = S.KSampler(model=model, seed=42, steps=4, cfg=5.0, sampler_name="euler", scheduler="simple", positive=pos,
                      negative=neg, latent_image=EmptyLatentImage(width=64, height=64, batch_size=1), denoise=1.0)
    plain = S.KSampler(model=model, seed=42, steps=4, cfg=5.0, sampler_name="euler", scheduler="simple",
                       positive=positive, negative=negative,
                       latent_image=EmptyLatentImage(width=64, height=64, batch_size=1), denoise=1.0)
    assert (ours["samples"] - plain["samples"]).abs().max() > 1e-2  # the ControlNet does change the result
    with model.use() as unet, clip.use() as encoders, vae.use() as vae_module, controlnet.slot.use((), 0) as net:
        pipe = _controlnet_pipeline(model, unet, clip, encoders, vae_module, net)
        theirs = pipe(prompt_embeds=positive[0][0], negative_prompt_embeds=negative[0][0],
                      image=hint.movedim(-1, 1), timesteps=_simple_timesteps(model, 4), guidance_scale=5.0,
                      latents=prepare_noise((1, 4, 8, 8), 42), output_type="latent", height=64, width=64,
                      controlnet_conditioning_scale=0.7, guess_mode=False).images
    theirs = theirs.float().cpu() / vae_module.config.scaling_factor
    assert_same_up_to_rounding(ours["samples"], theirs)


def test_two_stacked_controlnets_match_multicontrolnet(runtime: Any, control_models: dict[str, str]) -> None:
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    model, clip, vae, positive, negative = _sd1(runtime)
    first = C.ControlNetLoader(control_net_name=control_models["controlnet"])
    second = C.ControlNetLoader(control_net_name=control_models["second"])
    hints = _image(2), _image(3)
    pos, neg = C.ControlNetApplyAdvanced(positive=positive, negative=negative, control_net=first, image=hints[0],
                                         strength=0.8, start_percent=0.0, end_percent=1.0, vae=None)
    pos, neg = C.ControlNetApplyAdvanced(positive=pos, negative=neg, control_net=second, image=hints[1],
                                         strength=0.5, start_percent=0.0, end_percent=1.0, vae=None)
    assert [c.source for c in pos[0][1]["control"].chain()] == [control_models["controlnet"], control_models["second"]]
    ours = S.KSampler(model=model, seed=7, steps=3, cfg=4.0, sampler_name="euler", scheduler="simple", positive=pos,
                      negative=neg, latent_image=EmptyLatentImage(width=64, height=64, batch_size=2), denoise=1.0)
    with model.use() as unet, clip.use() as encoders, vae.use() as vae_module, \
            first.slot.use((), 0) as net1, second.slot.use((), 0) as net2:
        pipe = _controlnet_pipeline(model, unet, clip, encoders, vae_module, MultiControlNetModel([net1, net2]))
        theirs = pipe(prompt_embeds=positive[0][0], negative_prompt_embeds=negative[0][0],
                      image=[h.movedim(-1, 1) for h in hints], timesteps=_simple_timesteps(model, 3),
                      guidance_scale=4.0, latents=prepare_noise((2, 4, 8, 8), 7), output_type="latent", height=64,
                      width=64, num_images_per_prompt=2, controlnet_conditioning_scale=[0.8, 0.5],
                      guess_mode=False).images
    theirs = theirs.float().cpu() / vae_module.config.scaling_factor
    assert_same_up_to_rounding(ours["samples"], theirs)


def test_depth2img_matches_stable_diffusion_depth2img_pipeline(runtime: Any, control_models: dict[str, str]) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionDepth2ImgPipeline

    from nodes.controlnet_images import load_depth_estimator

    model, clip, vae = loaders.CheckpointLoaderSimple(ckpt_name=control_models["depth_checkpoint"])
    assert model.unet_config["in_channels"] == 5
    positive = T.CLIPTextEncode(text="a green triangle", clip=clip)
    negative = T.CLIPTextEncode(text="", clip=clip)
    image = _image(4)
    depth = C.DepthEstimator(image=image, model_name=control_models["depth_model"])
    pos, neg = C.DepthModelConditioning(positive=positive, negative=negative, depth_map=depth)
    latent = VAEEncode(pixels=image, vae=vae)
    ours = S.KSampler(model=model, seed=5, steps=4, cfg=6.0, sampler_name="euler", scheduler="simple", positive=pos,
                      negative=neg, latent_image=latent, denoise=0.5)
    noise = prepare_noise(latent["samples"].shape, 5)
    estimator = load_depth_estimator(Path(runtime.folders.models_dir) / "depth" / control_models["depth_model"])

    class Depth2Img(StableDiffusionDepth2ImgPipeline):
        """Starts from our VAE mean and noise (ComfyUI encodes with the mode; diffusers would sample both)."""

        def prepare_latents(self, image: Any, timestep: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            start = latent["samples"] * self.vae.config.scaling_factor
            return self.scheduler.add_noise(start, noise, timestep)

    # "trailing" spacing gives the integer timesteps of ComfyUI's "simple" schedule (999, 874, ... for 8 steps).
    assert _simple_timesteps(model, 8) == [999, 874, 749, 624, 499, 374, 249, 124]
    scheduler = EulerDiscreteScheduler.from_config({**model.scheduler_config, "timestep_spacing": "trailing"})
    with model.use() as unet, clip.use() as encoders, vae.use() as vae_module, estimator.slot.use((), 0) as dpt:
        pipe = Depth2Img(vae=vae_module, text_encoder=encoders[0], tokenizer=clip.tokenizers[0], unet=unet,
                         scheduler=scheduler, depth_estimator=dpt, feature_extractor=estimator.processor)
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe(prompt_embeds=positive[0][0], negative_prompt_embeds=negative[0][0], image=image.movedim(-1, 1),
                      depth_map=depth.mean(-1), strength=0.5, num_inference_steps=8, guidance_scale=6.0,
                      output_type="latent").images
        # The depth model sees what the pipeline's own depth path would give it.
        pixels = pipe.feature_extractor(images=[image_to_pil(image[0])], return_tensors="pt").pixel_values
        assert torch.equal(estimator.pixel_values(image), pixels)
        assert torch.equal(estimator.predict(image), dpt(pixels).predicted_depth)
    theirs = theirs.float().cpu() / vae_module.config.scaling_factor
    assert_same_up_to_rounding(ours["samples"], theirs)
