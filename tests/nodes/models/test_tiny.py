"""Tiny random models: deterministic, structured like the real families, fast, savable in real formats."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nodes.models import tiny
from nodes.models.tokenizers import clip_tokenizer

FAMILIES = {  # tiny name -> (family, variant, prediction type, UNet input channels, text encoder roles)
    "sd1": ("sd1", "base", "epsilon", 4, ["clip_l"]),
    "sd2": ("sd2", "base", "v_prediction", 4, ["clip_h"]),
    "sdxl": ("sdxl", "base", "epsilon", 4, ["clip_l", "clip_g"]),
    "sdxl_refiner": ("sdxl_refiner", "base", "epsilon", 4, ["clip_g"]),
    "sd2_depth": ("sd2", "depth", "epsilon", 5, ["clip_h"]),
    "inpaint": ("sd1", "inpaint", "epsilon", 9, ["clip_l"]),
}


@pytest.fixture(scope="module")
def models() -> dict[str, tiny.CheckpointParts]:
    return {name: tiny.tiny_parts(name) for name in FAMILIES}


def _all_tensors(parts: tiny.CheckpointParts) -> dict[str, torch.Tensor]:
    out = {f"unet.{k}": v for k, v in parts.unet.state_dict().items()}
    out.update({f"vae.{k}": v for k, v in parts.vae.state_dict().items()})
    for i, enc in enumerate(parts.text_encoders):
        out.update({f"te{i}.{k}": v for k, v in enc.state_dict().items()})
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_fields(models: dict, name: str) -> None:
    family, variant, prediction, in_channels, roles = FAMILIES[name]
    parts = models[name]
    assert (parts.family, parts.variant, parts.prediction_type) == (family, variant, prediction)
    assert parts.unet.config.in_channels == in_channels
    assert parts.text_encoder_roles == roles
    assert parts.scheduler_config["prediction_type"] == prediction
    assert parts.scheduler_config["beta_schedule"] == "scaled_linear"
    assert len(parts.tokenizers) == len(parts.text_encoders) == len(roles)
    assert all(e.config.vocab_size == 49408 for e in parts.text_encoders)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a, b, c = _all_tensors(tiny.tiny_sd1(0)), _all_tensors(tiny.tiny_sd1(0)), _all_tensors(tiny.tiny_sd1(1))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], c[k]) for k in a)


def test_every_tensor_is_perturbed(models: dict) -> None:
    # Default inits leave norms at exactly 1 and biases at 0; a swapped key would then go unnoticed.
    for name, parts in models.items():
        for key, value in _all_tensors(parts).items():
            if value.is_floating_point() and value.numel() > 1:
                assert value.std() > 0, f"{name}: {key} is constant"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_vae_scales_by_8_with_4_latent_channels(models: dict, name: str) -> None:
    vae = models[name].vae
    with torch.inference_mode():
        latent = vae.encode(torch.rand(1, 3, 64, 48) * 2 - 1).latent_dist.mean
        image = vae.decode(latent).sample
    assert latent.shape == (1, 4, 8, 6)
    assert image.shape == (1, 3, 64, 48)


def _encode(parts: tiny.CheckpointParts, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    states, pooled = [], None
    for encoder, tokenizer, default in zip(parts.text_encoders, parts.tokenizers, parts.extra["clip_defaults"]):
        ids = tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
        out = encoder(ids, output_hidden_states=True)
        hidden = out.hidden_states[default["layer"]]
        if default["final_norm"]:
            hidden = encoder.final_layer_norm(hidden) if hasattr(encoder, "final_layer_norm") \
                else encoder.text_model.final_layer_norm(hidden)
        states.append(hidden)
        pooled = getattr(out, "text_embeds", None)
    return torch.cat(states, dim=-1), pooled


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_txt2img_runs_at_64px(models: dict, name: str) -> None:
    parts = models[name]
    in_channels = parts.unet.config.in_channels
    with torch.inference_mode():
        context, pooled = _encode(parts, ["a photo of a cat", ""])
        added = None
        if parts.family.startswith("sdxl"):
            n_ids = 6 if parts.family == "sdxl" else 5
            added = {"text_embeds": pooled, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64][:n_ids]] * 2)}
        latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        for t in (900, 500):
            extra = torch.zeros(1, in_channels - 4, 8, 8)
            x = torch.cat([latent, extra], dim=1).repeat(2, 1, 1, 1)
            out = parts.unet(x, t, context, added_cond_kwargs=added).sample
            latent = latent - 0.1 * (out[1:] + 7.5 * (out[:1] - out[1:]))
        image = parts.vae.decode(latent / parts.vae.config.scaling_factor).sample
    assert context.shape == (2, 77, parts.unet.config.cross_attention_dim)
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_prompts_tokenise_as_in_real_models(models: dict) -> None:
    assert models["sd1"].tokenizers[0] is clip_tokenizer("clip_l")
    assert models["sdxl"].tokenizers[1] is clip_tokenizer("open_clip")
    ids = models["sd1"].tokenizers[0]("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_write_single_file_and_diffusers_folder(tmp_path: Path) -> None:
    single = tiny.write_tiny_checkpoint(tmp_path, "sd1")
    named = tiny.write_tiny_checkpoint(tmp_path, "sd2", name="my-sd2-eps", v_prediction=False)
    folder = tiny.write_tiny_checkpoint(tmp_path, "sdxl", layout="diffusers")
    assert single == tmp_path / "tiny-sd1.safetensors" and single.stat().st_size > 0
    assert named == tmp_path / "my-sd2-eps.safetensors"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
        assert (folder / sub).is_dir(), sub
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'sd3'"):
        tiny.tiny_parts("sd3")
    with pytest.raises(ValueError, match="'zip'"):
        tiny.write_tiny_checkpoint(tmp_path, "sd1", layout="zip")


def _count(make: object) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        module = make()  # type: ignore[operator]
    return sum(p.numel() for p in module.parameters())


def test_full_size_configs_have_the_published_sizes() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    millions = {
        "sd15 unet": _count(lambda: UNet2DConditionModel(**tiny.full_sd15_unet_config())),
        "sd2 unet": _count(lambda: UNet2DConditionModel(**tiny.full_sd2_unet_config())),
        "sdxl unet": _count(lambda: UNet2DConditionModel(**tiny.full_sdxl_unet_config())),
        "vae": _count(lambda: AutoencoderKL(**tiny.full_sd15_vae_config())),
        "clip_l": _count(lambda: CLIPTextModel(CLIPTextConfig(**tiny.full_clip_l_config()))),
        "clip_h": _count(lambda: CLIPTextModel(CLIPTextConfig(**tiny.full_sd2_text_encoder_config()))),
        "clip_g": _count(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**tiny.full_clip_g_config()))),
    }
    rounded = {k: round(v / 1e6, 1) for k, v in millions.items()}
    assert rounded == {"sd15 unet": 859.5, "sd2 unet": 865.9, "sdxl unet": 2567.5, "vae": 83.7,
                       "clip_l": 123.1, "clip_h": 353.0, "clip_g": 694.7}
