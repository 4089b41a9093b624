"""Tiny random-weight Stable Diffusion models for tests, benchmarks and docs, and full-size configs.

Every tiny model has the real structure of its family (UNet levels with and without attention,
a 4-level VAE that downsamples by 8, CLIP text encoders with the real 49,408-token vocabulary and
tokenizer) at a width of 32 or 64, so prompts tokenise as in real models and a whole 64x64 txt2img run
takes a fraction of a second on a CPU. Weights are deterministic for a seed, and every tensor is
perturbed so that no two weights are equal (a swapped key shows up in round-trip tests).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from nodes.models import detect
from nodes.models.checkpoint import ROLES_BY_FAMILY, CheckpointParts, scheduler_config
from nodes.models.tokenizers import tokenizer_for_role

VOCAB = 49408
TINY_WIDTH = 32
TINY_G_WIDTH = 64
SDXL_ADD_TIME = detect.SDXL_TIME_EMBED_DIM


# ------------------------------------------------------------------------------------- tiny configs


def tiny_text_encoder_config(role: str) -> dict[str, Any]:
    """A 2-layer CLIP text encoder of `role`: 32 wide (clip_g: 64), quick_gelu for clip_l, gelu otherwise.

    SDXL's two encoders must differ in width, as the real ones do (768 and 1280): diffusers' single-file
    loader tells them apart by it.
    """
    width = TINY_G_WIDTH if role == "clip_g" else TINY_WIDTH
    return {"vocab_size": VOCAB, "hidden_size": width, "intermediate_size": 2 * width, "projection_dim": width,
            "num_hidden_layers": 2, "num_attention_heads": 4 if width == 32 else 1, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu" if role == "clip_l" else "gelu", "layer_norm_eps": 1e-5,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def tiny_unet_config(family: str, *, in_channels: int = 4, v_prediction: bool = False) -> dict[str, Any]:
    """A 2-level UNet of widths (32, 64) laid out like `family`'s."""
    config: dict[str, Any] = {
        "in_channels": in_channels, "out_channels": 4, "block_out_channels": [32, 64], "layers_per_block": 2,
        "norm_num_groups": 32, "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu",
        "upcast_attention": False,
    }
    if family == "sd1":
        config.update(sample_size=64, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                      up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=TINY_WIDTH,
                      attention_head_dim=[8, 8], use_linear_projection=False, transformer_layers_per_block=[1, 1])
    elif family == "sd2":
        config.update(sample_size=96 if v_prediction else 64, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                      up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=TINY_WIDTH,
                      attention_head_dim=[1, 1], use_linear_projection=True, transformer_layers_per_block=[1, 1],
                      upcast_attention=v_prediction)
    elif family in ("sdxl", "sdxl_refiner"):
        context = TINY_WIDTH + TINY_G_WIDTH if family == "sdxl" else TINY_G_WIDTH
        time_ids = 6 if family == "sdxl" else 5
        config.update(sample_size=128, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                      up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=context,
                      attention_head_dim=[1, 1], use_linear_projection=True, transformer_layers_per_block=[1, 2],
                      addition_embed_type="text_time", addition_time_embed_dim=SDXL_ADD_TIME,
                      projection_class_embeddings_input_dim=TINY_G_WIDTH + time_ids * SDXL_ADD_TIME)
    else:
        raise ValueError(f"tiny_unet_config: family {family!r} is not one of {detect.FAMILIES}")
    return config


def tiny_vae_config(family: str, *, v_prediction: bool = False) -> dict[str, Any]:
    """A 4-level VAE of widths (8, 16, 16, 16): 4 latent channels at 1/8 of the image size."""
    sample = {"sd1": 512, "sd2": 768 if v_prediction else 512}.get(family, 1024)
    return {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 16, 16, 16],
            "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 8,
            "sample_size": sample, "scaling_factor": detect.VAE_SCALING[family], "use_quant_conv": True,
            "use_post_quant_conv": True, "mid_block_add_attention": True}


# ------------------------------------------------------------------------------- full-size configs


def full_sd15_unet_config() -> dict[str, Any]:
    """SD1.5's UNet (859.5 M parameters)."""
    return {"sample_size": 64, "in_channels": 4, "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
            "attention_head_dim": 8, "norm_num_groups": 32, "flip_sin_to_cos": True, "freq_shift": 0,
            "act_fn": "silu", "downsample_padding": 1, "mid_block_scale_factor": 1}


def full_sd15_vae_config() -> dict[str, Any]:
    """SD1.x/SD2.x's VAE (83.7 M parameters)."""
    return {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32,
            "sample_size": 512, "scaling_factor": 0.18215}


def full_clip_l_config() -> dict[str, Any]:
    """OpenAI CLIP ViT-L/14's text encoder (123 M parameters), as SD1 and SDXL use it."""
    return {"vocab_size": VOCAB, "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2,
            "pad_token_id": 1}


def full_sd15_text_encoder_config() -> dict[str, Any]:
    return full_clip_l_config()


def full_sd2_unet_config(v_prediction: bool = True) -> dict[str, Any]:
    """SD2.x's UNet (865.9 M parameters)."""
    config = full_sd15_unet_config()
    config.update(sample_size=96 if v_prediction else 64, cross_attention_dim=1024,
                  attention_head_dim=[5, 10, 20, 20], use_linear_projection=True, upcast_attention=v_prediction)
    return config


def full_sd2_text_encoder_config() -> dict[str, Any]:
    """OpenCLIP ViT-H/14's text tower, all 24 layers (SD2 conditions on the penultimate one)."""
    return {"vocab_size": VOCAB, "hidden_size": 1024, "intermediate_size": 4096, "projection_dim": 1024,
            "num_hidden_layers": 24, "num_attention_heads": 16, "max_position_embeddings": 77,
            "hidden_act": "gelu", "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def full_sdxl_unet_config() -> dict[str, Any]:
    """SDXL base's UNet (2.57 B parameters)."""
    return {"sample_size": 128, "in_channels": 4, "out_channels": 4,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "cross_attention_dim": 2048,
            "attention_head_dim": [5, 10, 20], "use_linear_projection": True,
            "transformer_layers_per_block": [1, 2, 10], "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32,
            "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu"}


def full_sdxl_vae_config() -> dict[str, Any]:
    config = full_sd15_vae_config()
    config.update(sample_size=1024, scaling_factor=0.13025)
    return config


def full_clip_g_config() -> dict[str, Any]:
    """OpenCLIP ViT-bigG/14's text tower (695 M parameters), SDXL's second encoder."""
    return {"vocab_size": VOCAB, "hidden_size": 1280, "intermediate_size": 5120, "projection_dim": 1280,
            "num_hidden_layers": 32, "num_attention_heads": 20, "max_position_embeddings": 77,
            "hidden_act": "gelu", "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def full_sdxl_text_encoder_configs() -> list[dict[str, Any]]:
    return [full_clip_l_config(), full_clip_g_config()]


# ------------------------------------------------------------------------------------------- building


def _perturb(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.02) -> None:
    """Make every tensor distinct (default inits leave norms at 1/0 and some biases at 0)."""
    with torch.no_grad():
        for param in module.parameters():
            if param.device.type == "meta":  # shapes only (e.g. built under init_empty_weights)
                continue
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale)


def random_parts(family: str, *, unet_config: Mapping[str, Any] | None, vae_config: Mapping[str, Any] | None,
                 text_encoder_configs: list[Mapping[str, Any]], prediction_type: str = "epsilon",
                 variant: str = "base", seed: int = 0, name: str | None = None,
                 dtype: torch.dtype = torch.float32) -> CheckpointParts:
    """CheckpointParts with seeded random weights from explicit configs (tiny or full size)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: PLC0415
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415

    roles = ROLES_BY_FAMILY[family]
    if len(text_encoder_configs) != len(roles):
        raise ValueError(f"random_parts: {family} needs text encoders {roles}, got {len(text_encoder_configs)} configs")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config) if unet_config is not None else None
        vae = AutoencoderKL(**vae_config) if vae_config is not None else None
        encoders = []
        for role, cfg in zip(roles, text_encoder_configs):
            cls = CLIPTextModelWithProjection if role == "clip_g" else CLIPTextModel
            encoders.append(cls(CLIPTextConfig(**cfg)))
    projections: dict[str, torch.Tensor] = {}
    for module in (unet, vae, *encoders):
        if module is not None:
            _perturb(module, generator)
            if dtype != torch.float32:
                module.to(dtype)
            module.eval().requires_grad_(False)
    if family == "sd2":
        # SD2 files carry OpenCLIP's text projection, which the diffusion model never uses.
        hidden = text_encoder_configs[0]["hidden_size"]
        proj = text_encoder_configs[0].get("projection_dim", hidden)
        projections["clip_h"] = (torch.randn(proj, hidden, generator=generator) * hidden**-0.5).to(dtype)
    extra = {"variant": variant, "text_encoder_roles": list(roles), "layout": "tiny",
             "clip_defaults": [detect.clip_defaults(family, r) for r in roles], "text_projections": projections,
             "notes": [], "metadata": {}, "unused_keys": [], "zero_snr": False}
    return CheckpointParts(family=family, prediction_type=prediction_type, unet=unet, vae=vae,
                           text_encoders=encoders, tokenizers=[tokenizer_for_role(r) for r in roles],
                           scheduler_config=scheduler_config(prediction_type),
                           path=name or f"<random {family} seed={seed}>", extra=extra)


def _tiny(family: str, seed: int, *, in_channels: int = 4, v_prediction: bool = False,
          variant: str = "base") -> CheckpointParts:
    roles = ROLES_BY_FAMILY[family]
    return random_parts(
        family, unet_config=tiny_unet_config(family, in_channels=in_channels, v_prediction=v_prediction),
        vae_config=tiny_vae_config(family, v_prediction=v_prediction),
        text_encoder_configs=[tiny_text_encoder_config(r) for r in roles],
        prediction_type="v_prediction" if v_prediction else "epsilon", variant=variant, seed=seed,
        name=f"<tiny {family}{'' if variant == 'base' else '-' + variant} seed={seed}>")


def tiny_sd1(seed: int = 0) -> CheckpointParts:
    """A tiny SD1.x: CLIP-L-style encoder, epsilon prediction."""
    return _tiny("sd1", seed)


def tiny_sd2(seed: int = 0, v_prediction: bool = True) -> CheckpointParts:
    """A tiny SD2.x: OpenCLIP-H-style encoder, linear projections, v-prediction like SD2.1-768 by default."""
    return _tiny("sd2", seed, v_prediction=v_prediction)


def tiny_sdxl(seed: int = 0) -> CheckpointParts:
    """A tiny SDXL base: CLIP-L + OpenCLIP-G-style encoders, text_time additional embeddings."""
    return _tiny("sdxl", seed)


def tiny_sdxl_refiner(seed: int = 0) -> CheckpointParts:
    """A tiny SDXL refiner: OpenCLIP-G-style encoder only, 5 time ids."""
    return _tiny("sdxl_refiner", seed)


def tiny_sd2_depth(seed: int = 0) -> CheckpointParts:
    """A tiny SD2 depth model: the UNet takes latent + 1 depth channel (5)."""
    return _tiny("sd2", seed, in_channels=5, variant="depth")


def tiny_inpaint(seed: int = 0) -> CheckpointParts:
    """A tiny SD1 inpainting model: the UNet takes latent + mask + masked latent (9 channels)."""
    return _tiny("sd1", seed, in_channels=9, variant="inpaint")


TINY_BUILDERS: dict[str, Callable[..., CheckpointParts]] = {
    "sd1": tiny_sd1, "sd2": tiny_sd2, "sdxl": tiny_sdxl, "sdxl_refiner": tiny_sdxl_refiner,
    "sd2_depth": tiny_sd2_depth, "inpaint": tiny_inpaint,
}


def tiny_parts(family: str, seed: int = 0, **options: Any) -> CheckpointParts:
    """The tiny model named `family` (a key of TINY_BUILDERS)."""
    try:
        builder = TINY_BUILDERS[family]
    except KeyError:
        raise ValueError(f"tiny model {family!r} is not one of {sorted(TINY_BUILDERS)}") from None
    return builder(seed=seed, **options)


def write_tiny_checkpoint(directory: str | os.PathLike[str], family: str, name: str | None = None,
                          layout: str = "single_file", *, seed: int = 0, **options: Any) -> Path:
    """Save a tiny model in a real format: one original-layout .safetensors file, or a diffusers folder.

    Returns the file (`<directory>/<name>.safetensors`) or folder (`<directory>/<name>`); `name`
    defaults to `tiny-<family>`. `options` go to the builder (e.g. `v_prediction=False` for sd2).
    """
    from nodes.models.ldm_export import save_checkpoint, write_diffusers_folder  # noqa: PLC0415

    parts = tiny_parts(family, seed, **options)
    name = name or f"tiny-{family}"
    directory = Path(directory)
    if layout == "single_file":
        return save_checkpoint(parts, directory / f"{name}.safetensors")
    if layout == "diffusers":
        return write_diffusers_folder(parts, directory / name)
    raise ValueError(f"write_tiny_checkpoint: layout {layout!r} is not 'single_file' or 'diffusers'")


def clone_parts(parts: CheckpointParts) -> CheckpointParts:
    """A deep copy (new weights) of `parts`, sharing the cached tokenizers."""
    copied = copy.copy(parts)
    copied.unet = copy.deepcopy(parts.unet)
    copied.vae = copy.deepcopy(parts.vae)
    copied.text_encoders = [copy.deepcopy(e) for e in parts.text_encoders]
    copied.extra = copy.deepcopy(parts.extra)
    copied.scheduler_config = dict(parts.scheduler_config)
    return copied
