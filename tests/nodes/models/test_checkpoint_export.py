"""Writing the original single-file layout: exact round trips, the real key layout, parity with diffusers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nodes.models import ldm_export, tiny
from nodes.models.checkpoint import CheckpointParts, load_checkpoint


def _tensors(parts: CheckpointParts) -> dict[str, torch.Tensor]:
    out = {f"unet.{k}": v for k, v in parts.unet.state_dict().items()}
    out |= {f"vae.{k}": v for k, v in parts.vae.state_dict().items()}
    for role, enc in zip(parts.text_encoder_roles, parts.text_encoders):
        out |= {f"{role}.{k}": v for k, v in enc.state_dict().items()}
    out |= {f"projection.{k}": v for k, v in parts.extra.get("text_projections", {}).items()}
    return out


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl", "sdxl_refiner", "sd2_depth", "inpaint"])
def test_export_then_load_gives_every_tensor_back(tmp_path: Path, name: str) -> None:
    original = tiny.tiny_parts(name)
    path = ldm_export.save_checkpoint(original, tmp_path / f"{name}.safetensors")
    loaded = load_checkpoint(path)
    assert (loaded.family, loaded.variant, loaded.prediction_type) == \
        (original.family, original.variant, original.prediction_type)
    a, b = _tensors(original), _tensors(loaded)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    # And the file written from the loaded modules is the same file, key for key.
    again = ldm_export.checkpoint_to_ldm(loaded)
    first = ldm_export.checkpoint_to_ldm(original)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
    assert loaded.extra["unused_keys"] == []


def test_file_has_the_original_key_layout(tmp_path: Path) -> None:
    path = ldm_export.save_checkpoint(tiny.tiny_sdxl(), tmp_path / "xl.safetensors")
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    assert meta["diffloom.family"] == "sdxl"
    # OpenCLIP: fused q/k/v and a [hidden, projection] text projection; CLIP-L keeps transformers' names.
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"] == (192, 64)
    assert shapes["conditioner.embedders.1.model.text_projection"] == (64, 64)
    assert shapes["conditioner.embedders.1.model.positional_embedding"] == (77, 64)
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight" in shapes
    # VAE attention projections are 1x1 convolutions; the decoder's levels count backwards.
    assert shapes["first_stage_model.decoder.mid.attn_1.q.weight"] == (16, 16, 1, 1)
    assert shapes["first_stage_model.decoder.up.0.block.0.conv1.weight"] == (8, 16, 3, 3)
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in shapes
    # UNet: SDXL's additional embedding, the upsampler after the attention in output block 2.
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (128, 64 + 6 * 256)
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in shapes
    assert "model.diffusion_model.input_blocks.3.0.op.weight" in shapes


def test_sd1_full_size_layout_matches_the_published_checkpoint() -> None:
    """Key counts of the real SD1.5 file: UNet 686, VAE 248, CLIP 196 (environment.md, section 3)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        parts = tiny.random_parts("sd1", unet_config=tiny.full_sd15_unet_config(),
                                  vae_config=tiny.full_sd15_vae_config(),
                                  text_encoder_configs=[tiny.full_clip_l_config()])
    keys = ldm_export.checkpoint_to_ldm(parts)
    counts = {p: sum(k.startswith(p) for k in keys) for p in
              ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")}
    assert list(counts.values()) == [686, 248, 196]
    for key in ("model.diffusion_model.output_blocks.2.1.conv.weight",
                "model.diffusion_model.output_blocks.5.2.conv.weight",
                "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                "first_stage_model.encoder.down.3.block.1.conv2.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert key in keys, key


@pytest.fixture(scope="module")
def sd1_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CheckpointParts]:
    folder = tmp_path_factory.mktemp("parity")
    return tiny.write_tiny_checkpoint(folder, "sd1", seed=3), load_checkpoint(folder / "tiny-sd1.safetensors")


def test_same_outputs_as_diffusers_from_single_file(sd1_file: tuple[Path, CheckpointParts], tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    path, ours = sd1_file
    config = ldm_export.write_diffusers_folder(ours, tmp_path / "config", weights=False)
    assert not list(config.rglob("*.safetensors"))
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True)
    g = torch.Generator().manual_seed(0)
    latents, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    ids = ours.tokenizers[0](["a photo of a cat", ""], padding="max_length", max_length=77,
                             return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.equal(ours.unet(latents, 321, context).sample, pipe.unet(latents, 321, context).sample)
        assert torch.equal(ours.text_encoders[0](ids).last_hidden_state, pipe.text_encoder(ids).last_hidden_state)
        assert torch.equal(ours.vae.decode(latents).sample, pipe.vae.decode(latents).sample)
    assert pipe.tokenizer(["a photo of a cat"]).input_ids == ours.tokenizers[0](["a photo of a cat"]).input_ids
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.beta_schedule == ours.scheduler_config["beta_schedule"]


def test_sdxl_open_clip_export_reads_back_in_diffusers(tmp_path: Path) -> None:
    """diffusers' own OpenCLIP converter splits our fused attention back into the same weights."""
    from diffusers import StableDiffusionXLPipeline

    path = tiny.write_tiny_checkpoint(tmp_path, "sdxl", seed=5)
    ours = load_checkpoint(path)
    config = ldm_export.write_diffusers_folder(ours, tmp_path / "config", weights=False)
    pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(config), local_files_only=True)
    pairs = zip([*ours.text_encoders, ours.unet, ours.vae],
                [pipe.text_encoder, pipe.text_encoder_2, pipe.unet, pipe.vae])
    for mine, theirs in pairs:
        sa, sb = mine.state_dict(), theirs.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_is_atomic_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    ldm_export.save_state_dict({"a": torch.ones(3)}, target)
    with safe_open(str(target), "pt") as f:
        old = f.get_tensor("a")  # memory-mapped view of the first file
    ldm_export.save_state_dict({"a": torch.zeros(5)}, target, metadata={"k": "v"})
    assert torch.equal(old, torch.ones(3))  # the replaced file's mapping stays valid
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with safe_open(str(target), "pt") as f:
        assert torch.equal(f.get_tensor("a"), torch.zeros(5)) and f.metadata() == {"k": "v"}


def test_shared_storage_is_written_as_separate_tensors(tmp_path: Path) -> None:
    base = torch.arange(6.0)
    path = ldm_export.save_state_dict({"x": base, "y": base}, tmp_path / "shared.safetensors")
    with safe_open(str(path), "pt") as f:
        assert torch.equal(f.get_tensor("x"), f.get_tensor("y"))


def test_unmappable_keys_are_named() -> None:
    with pytest.raises(ldm_export.ExportError, match="'down_blocks.0.strange.weight'"):
        ldm_export.unet_to_ldm({"down_blocks.0.resnets.0.conv1.weight": torch.ones(1),
                                "down_blocks.0.strange.weight": torch.ones(1)})
    with pytest.raises(ldm_export.ExportError, match="'encoder.mystery'"):
        ldm_export.vae_to_ldm({"encoder.down_blocks.0.resnets.0.conv1.weight": torch.ones(1),
                               "decoder.up_blocks.0.resnets.0.conv1.weight": torch.ones(1),
                               "encoder.mystery": torch.ones(1)})
    with pytest.raises(ldm_export.ExportError, match="'clip_x'"):
        ldm_export.text_encoder_to_ldm("clip_x", {})
