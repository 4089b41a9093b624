"""Parity with diffusers' own pipelines: same weights, seed, schedule and noise give the same latents.

ComfyUI's sampling is the reference for user-visible behaviour, so each test configures diffusers to match
it: the "simple" schedule takes table sigmas at integer timesteps, given to diffusers' Euler scheduler as
explicit `timesteps` with "leading" spacing (noise * sqrt(sigma_max^2 + 1) at full denoise), and the same
noise tensor (or a generator seeded the same way) goes into both.
"""
from __future__ import annotations

from typing import Any

import torch

from nodes import loaders, sampler_nodes as S, text_nodes as T
from nodes.guidance import model_sampling
from nodes.latent import EmptyLatentImage
from nodes.sampling import prepare_noise
from nodes.vae_nodes import InpaintModelConditioning, VAEEncode
from tests.nodes.parity import assert_same_up_to_rounding


def euler_for(model: Any, steps: int, denoise: float = 1.0) -> tuple[Any, list[int]]:
    """diffusers' Euler scheduler and the integer timesteps of our "simple" schedule of `steps` (full) steps."""
    from diffusers import EulerDiscreteScheduler

    ms = model_sampling(model)
    total = steps if denoise >= 1 else int(steps / denoise)
    sigmas = S.BasicScheduler(model=model, scheduler="simple", steps=total, denoise=1.0)
    timesteps = [int(ms.timestep(s)) for s in sigmas[:-1]]
    scheduler = EulerDiscreteScheduler.from_config({**model.scheduler_config, "timestep_spacing": "leading"})
    return scheduler, timesteps


def test_sdxl_matches_stable_diffusion_xl_pipeline(runtime: Any) -> None:
    from diffusers import StableDiffusionXLPipeline

    model, clip, vae = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sdxl.safetensors")

    def encode(text: str) -> Any:
        return T.CLIPTextEncodeSDXL(clip=clip, width=64, height=64, crop_w=0, crop_h=0, target_width=64,
                                    target_height=64, text_g=text, text_l=text)

    ours = S.KSampler(model=model, seed=11, steps=3, cfg=4.0, sampler_name="euler", scheduler="simple",
                      positive=encode("a lighthouse at sunset"), negative=encode("blurry"),
                      latent_image=EmptyLatentImage(width=64, height=64, batch_size=1), denoise=1.0)
    scheduler, timesteps = euler_for(model, 3)
    with model.use() as unet, clip.use() as encoders, vae.use() as vae_module:
        pipe = StableDiffusionXLPipeline(vae=vae_module, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                         tokenizer=clip.tokenizers[0], tokenizer_2=clip.tokenizers[1], unet=unet,
                                         scheduler=scheduler, force_zeros_for_empty_prompt=False)
        pipe.set_progress_bar_config(disable=True)
        theirs = pipe("a lighthouse at sunset", negative_prompt="blurry", timesteps=timesteps, guidance_scale=4.0,
                      latents=prepare_noise((1, 4, 8, 8), 11), output_type="latent", height=64, width=64).images
    theirs = theirs.float().cpu() / vae_module.config.scaling_factor
    assert_same_up_to_rounding(ours["samples"], theirs)


def test_img2img_matches_stable_diffusion_img2img_pipeline(runtime: Any) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    model, clip, vae = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sd1.safetensors")
    pixels = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(3))
    latent = VAEEncode(pixels=pixels, vae=vae)
    positive, negative = T.CLIPTextEncode(text="a red circle", clip=clip), T.CLIPTextEncode(text="blurry", clip=clip)
    ours = S.KSampler(model=model, seed=21, steps=2, cfg=3.0, sampler_name="euler", scheduler="simple",
                      positive=positive, negative=negative, latent_image=latent, denoise=0.5)
    # denoise 0.5 of 2 steps is the last 2 of a 4-step schedule: diffusers' strength 0.5 of 4 timesteps.
    scheduler, timesteps = euler_for(model, 2, denoise=0.5)
    with model.use() as unet, clip.use() as encoders, vae.use() as vae_module:
        pipe = StableDiffusionImg2ImgPipeline(vae=vae_module, text_encoder=encoders[0], tokenizer=clip.tokenizers[0],
                                              unet=unet, scheduler=scheduler, safety_checker=None,
                                              feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        # Handing over the encoded latents (4 channels) skips diffusers' own sampled encode; the only random
        # draw left is the noise, from a generator seeded like ours.
        scaled = latent["samples"] * vae_module.config.scaling_factor
        theirs = pipe("a red circle", image=scaled, strength=0.5, negative_prompt="blurry", timesteps=timesteps,
                      guidance_scale=3.0, generator=torch.Generator().manual_seed(21), output_type="latent").images
    theirs = theirs.float().cpu() / vae_module.config.scaling_factor
    assert_same_up_to_rounding(ours["samples"], theirs)


def test_inpainting_model_matches_stable_diffusion_inpaint_pipeline(runtime: Any, tmp_path: Any) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    from nodes.models.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(runtime.folders.get_folder_paths("checkpoints")[0], "inpaint", name="tiny-inpaint")
    runtime.folders.invalidate()
    model, clip, vae = loaders.CheckpointLoaderSimple(ckpt_name="tiny-inpaint.safetensors")
    pixels = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(4))
    mask = torch.zeros((1, 64, 64))
    mask[:, 16:48, 8:40] = 1.0  # aligned to 8 px blocks: nearest and bilinear resizing agree
    positive, negative = T.CLIPTextEncode(text="a green square", clip=clip), T.CLIPTextEncode(text="blurry", clip=clip)
    pos, neg, latent = InpaintModelConditioning(positive=positive, negative=negative, vae=vae, pixels=pixels, mask=mask,
                                                noise_mask=False)
    ours = S.KSampler(model=model, seed=31, steps=3, cfg=3.0, sampler_name="euler", scheduler="simple",
                      positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    scheduler, timesteps = euler_for(model, 3)
    with model.use() as unet, clip.use() as encoders, vae.use() as vae_module:
        pipe = StableDiffusionInpaintPipeline(vae=vae_module, text_encoder=encoders[0], tokenizer=clip.tokenizers[0],
                                              unet=unet, scheduler=scheduler, safety_checker=None,
                                              feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        scale = vae_module.config.scaling_factor
        masked_latents = pos[0][1]["concat_latent_image"] * scale
        # ComfyUI noises the encoded image at full denoise (latent + noise * sqrt(sigma^2 + 1)); diffusers starts
        # from noise * init_noise_sigma alone, so hand it the latent divided by that factor as part of `latents`.
        scheduler.set_timesteps(timesteps=timesteps)
        start = prepare_noise((1, 4, 8, 8), 31) + latent["samples"] * scale / scheduler.init_noise_sigma
        theirs = pipe("a green square", image=pixels.movedim(-1, 1), mask_image=mask.unsqueeze(1),
                      masked_image_latents=masked_latents, negative_prompt="blurry", timesteps=timesteps,
                      guidance_scale=3.0, strength=1.0, latents=start, output_type="latent", height=64,
                      width=64).images
    theirs = theirs.float().cpu() / vae_module.config.scaling_factor
    assert_same_up_to_rounding(ours["samples"], theirs)
