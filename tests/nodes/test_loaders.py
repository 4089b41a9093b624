"""Loader nodes on real files: whole checkpoints, and VAE / UNet / text-encoder files through the shared manager."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodes import loaders, sampler_nodes as S, text_nodes as T
from nodes.latent import EmptyLatentImage
from nodes.models.ldm_export import save_state_dict, text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from nodes.models.tiny import tiny_sd1


@pytest.fixture
def component_files(runtime: Any) -> dict[str, str]:
    """The tiny SD1's UNet, VAE and CLIP saved as separate files in their model folders."""
    models = Path(runtime.folders.models_dir)
    parts = tiny_sd1()
    names = {"unet": "tiny-unet.safetensors", "vae": "tiny-vae.safetensors", "clip": "tiny-clip-l.safetensors"}
    save_state_dict(unet_to_ldm(parts.unet.state_dict()), models / "diffusion_models" / names["unet"])
    save_state_dict(vae_to_ldm(parts.vae.state_dict()), models / "vae" / names["vae"])
    save_state_dict(text_encoder_to_ldm("clip_l", parts.text_encoders[0].state_dict()),
                    models / "text_encoders" / names["clip"])
    runtime.folders.invalidate()
    return names


def test_component_loaders_rebuild_the_checkpoint(runtime: Any, component_files: dict[str, str]) -> None:
    model, clip, vae = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sd1.safetensors")
    unet = loaders.UNETLoader(unet_name=component_files["unet"], weight_dtype="default")
    vae2 = loaders.VAELoader(vae_name=component_files["vae"])
    clip2 = loaders.CLIPLoader(clip_name=component_files["clip"], type="stable_diffusion")
    latent = EmptyLatentImage(width=32, height=32, batch_size=1)

    def generate(m: Any, c: Any, v: Any) -> torch.Tensor:
        pos, neg = T.CLIPTextEncode(text="a red circle", clip=c), T.CLIPTextEncode(text="", clip=c)
        out = S.KSampler(model=m, seed=1, steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", positive=pos,
                         negative=neg, latent_image=latent, denoise=1.0)
        return v.decode(out["samples"])

    assert torch.allclose(generate(model, clip, vae), generate(unet, clip2, vae2), atol=1e-5)
    loads = runtime.models.loads
    loaders.VAELoader(vae_name=component_files["vae"])
    assert runtime.models.loads == loads  # component files are shared like checkpoints


def test_clip_set_last_layer_changes_the_encoding(runtime: Any) -> None:
    _, clip, _ = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sd1.safetensors")
    last = T.CLIPTextEncode(text="a red circle", clip=clip)[0][0]
    skip = T.CLIPTextEncode(text="a red circle", clip=loaders.CLIPSetLastLayer(clip=clip, stop_at_clip_layer=-2))[0][0]
    assert last.shape == skip.shape and not torch.allclose(last, skip)


def test_missing_model_names_the_folder(runtime: Any) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoints 'nope.safetensors' not found"):
        loaders.CheckpointLoaderSimple(ckpt_name="nope.safetensors")
