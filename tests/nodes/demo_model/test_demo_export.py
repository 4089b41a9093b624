"""The demo model's exports: SD1 single file and original-layout ControlNet, loaded back by diffloom's and diffusers' code."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.demo_model import architecture as arch
from nodes.demo_model.controlnet_export import CONTROL_PREFIX, controlnet_to_ldm, save_controlnet
from nodes.demo_model.export import fold_latent_normalisation, latent_statistics, save_sd1_checkpoint
from nodes.models.checkpoint import load_checkpoint
from nodes.models.tokenizers import clip_tokenizer



def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-zero values everywhere (ControlNet's zero convolutions included), so equality checks mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


@pytest.fixture(scope="module")
def modules() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    vocab = arch.CompactVocabulary(clip_tokenizer("sd1")("a red circle blue square").input_ids)
    compact = _randomise(arch.build_text_encoder(len(vocab)), 1)
    return {"unet": _randomise(arch.build_unet(), 2), "vae": _randomise(arch.build_vae(), 3), "compact_te": compact,
            "te": arch.expand_text_encoder(compact, vocab), "vocab": vocab}  # type: ignore[dict-item]


def test_controlnet_export_round_trips_through_diffusers_converter(modules: dict) -> None:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint, infer_diffusers_model_type

    controlnet = _randomise(arch.build_controlnet(modules["unet"]), 4)
    state = controlnet.state_dict()
    ldm = {CONTROL_PREFIX + k: v for k, v in controlnet_to_ldm(state).items()}
    assert infer_diffusers_model_type(ldm) == "controlnet"
    assert "control_model.input_hint_block.14.weight" in ldm and "control_model.middle_block_out.0.weight" in ldm
    back = convert_controlnet_checkpoint(ldm, {"layers_per_block": 1})
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_saved_controlnet_file_loads_into_a_controlnet(modules: dict, tmp_path: Path) -> None:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors.torch import load_file

    controlnet = _randomise(arch.build_controlnet(modules["unet"]), 5)
    path = save_controlnet(controlnet, tmp_path / "cn.safetensors", metadata={"diffloom.model": "test"})
    raw = {k.removeprefix(CONTROL_PREFIX): v for k, v in load_file(str(path)).items()}
    rebuilt = arch.build_controlnet(modules["unet"])
    rebuilt.load_state_dict(convert_controlnet_checkpoint(raw, {"layers_per_block": 1}), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), controlnet.state_dict().values()))


def test_latent_normalisation_keeps_decoding_and_normalises_latents() -> None:
    torch.manual_seed(1)
    vae = _randomise(arch.build_vae(), 6)
    images = torch.rand(6, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        before = vae.encode(images).latent_dist
        decoded = vae.decode(before.mean).sample
        mean, std = latent_statistics(before.mean)
        fold_latent_normalisation(vae, mean, std)
        after = vae.encode(images).latent_dist
        redecoded = vae.decode(after.mean).sample
    scaled = after.mean * arch.SD1_SCALING
    assert torch.allclose(redecoded, decoded, atol=1e-4)
    assert torch.allclose(scaled.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(scaled.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3)
    # The posterior's spread is rescaled with its mean.
    assert torch.allclose(after.std * arch.SD1_SCALING * std[None, :, None, None], before.std, rtol=1e-3)


def test_expanded_text_encoder_matches_the_compact_one_and_ignores_unknown_words(modules: dict) -> None:
    tokenizer = clip_tokenizer("sd1")
    ids = tokenizer(["a red circle", "a blue square"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    vocab = modules["vocab"]
    with torch.no_grad():
        full = modules["te"](ids).last_hidden_state
        compact = modules["compact_te"](vocab.compact(ids)).last_hidden_state
    assert torch.allclose(full, compact, atol=1e-6)
    table = modules["te"].get_input_embeddings().weight
    unknown = tokenizer("zebra").input_ids[1]
    assert table.shape == (arch.CLIP_VOCAB, arch.TEXT_WIDTH)
    assert torch.count_nonzero(table[unknown]) == 0 and torch.count_nonzero(table[736]) > 0
    with pytest.raises(ValueError, match=r"token ids \[\d+\] are not in the 7-token training vocabulary"):
        vocab.compact(torch.tensor([[49406, unknown, 49407]]))


def test_single_file_rebuilds_the_same_modules_through_the_loader(modules: dict, tmp_path: Path) -> None:
    path = save_sd1_checkpoint(modules["unet"], modules["vae"], modules["te"], tmp_path / "demo.safetensors",
                               dtype=torch.float32, metadata={"diffloom.model": "test"})
    parts = load_checkpoint(path, dtype=torch.float32)
    assert (parts.family, parts.prediction_type, parts.variant) == ("sd1", "epsilon", "base")
    assert parts.extra["unused_keys"] == []
    for name in ("block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
                 "norm_num_groups", "down_block_types", "up_block_types"):
        assert list(parts.unet.config[name]) == list(arch.unet_config()[name]) \
            if isinstance(arch.unet_config()[name], list) else parts.unet.config[name] == arch.unet_config()[name], name
    assert parts.vae.config.norm_num_groups == arch.groups(arch.VAE_WIDTHS)
    assert parts.vae.config.scaling_factor == arch.SD1_SCALING
    assert parts.tokenizers[0]("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    g = torch.Generator().manual_seed(0)
    latents, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500])
    ids = parts.tokenizers[0](["a red circle", ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        context = modules["te"](ids).last_hidden_state
        assert torch.equal(parts.text_encoders[0](ids).last_hidden_state, context)
        assert torch.equal(parts.unet(latents, t, context).sample, modules["unet"](latents, t, context).sample)
        assert torch.equal(parts.vae.decode(latents).sample, modules["vae"].decode(latents).sample)
