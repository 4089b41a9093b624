"""LoRA: kohya / diffusers-PEFT layouts mapped onto our UNet and CLIP, applied as patches to clones."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes.models.ldm_export import unet_to_ldm
from nodes.models.lora import apply_lora, load_lora_file, lora_patches, unet_ldm_module_names
from nodes.models.safe_pickle import UnsafePickleError
from nodes.models.tiny import tiny_sd1, tiny_sdxl
from nodes.models.wrappers import ClipWrapper, ModelWrapper, wrap_checkpoint
from nodes.text import encode_text

RANK = 4


@pytest.fixture(scope="module")
def sd1():
    return wrap_checkpoint(tiny_sd1(0))


@pytest.fixture(scope="module")
def sdxl():
    return wrap_checkpoint(tiny_sdxl(1))


def base_weights(wrapper: ModelWrapper | ClipWrapper) -> dict[str, torch.Tensor]:
    with wrapper.use() as module:  # restores whatever another test merged
        return {k: v.detach().clone() for k, v in module.state_dict().items()}


def weights_of(wrapper: ModelWrapper | ClipWrapper) -> dict[str, torch.Tensor]:
    with wrapper.use() as module:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}


def low_rank(out_shape: torch.Size, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (down, up) pair for a Linear [out, in] or Conv [out, in, kh, kw] weight."""
    out_ch, in_rest = out_shape[0], out_shape[1:]
    down = torch.randn(RANK, *in_rest, generator=g) * 0.1
    up = torch.randn(out_ch, RANK, *([1, 1] if len(in_rest) == 3 else []), generator=g) * 0.1
    return down, up


def expected_delta(down: torch.Tensor, up: torch.Tensor, shape: torch.Size, alpha: float) -> torch.Tensor:
    return (up.flatten(1) @ down.flatten(1)).reshape(shape) * (alpha / RANK)


# modules targeted in the tiny SD1: attention linears, a 1x1 proj_in conv, a 3x3 resnet conv (LoCon)
SD1_UNET_TARGETS = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_out_0": "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0",
    "lora_unet_down_blocks_0_attentions_1_proj_in": "down_blocks.0.attentions.1.proj_in",
    "lora_unet_mid_block_resnets_1_conv1": "mid_block.resnets.1.conv1",
}
SD1_TE_TARGETS = {
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": "0.encoder.layers.0.self_attn.q_proj",
    "lora_te_text_model_encoder_layers_1_mlp_fc2": "0.encoder.layers.1.mlp.fc2",
}


def kohya_lora(model: ModelWrapper, clip: ClipWrapper, unet_targets: dict[str, str], te_targets: dict[str, str],
               alpha: float, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A kohya-format state dict and the per-parameter deltas it should produce at strength 1."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}
    for targets, shapes, tag in ((unet_targets, model.slot.param_shapes, "unet"),
                                 (te_targets, clip.slot.param_shapes, "clip")):
        for kohya, module in targets.items():
            shape = shapes[module + ".weight"]
            down, up = low_rank(shape, g)
            sd[f"{kohya}.lora_down.weight"] = down
            sd[f"{kohya}.lora_up.weight"] = up
            sd[f"{kohya}.alpha"] = torch.tensor(alpha)
            deltas[f"{tag}:{module}.weight"] = expected_delta(down, up, shape, alpha)
    return sd, deltas


def check_applied(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor],
                  tag: str, strength: float) -> None:
    targeted = {k.split(":", 1)[1]: d for k, d in deltas.items() if k.startswith(tag + ":")}
    assert targeted
    for key, value in after.items():
        if key in targeted:
            assert torch.allclose(value, before[key] + strength * targeted[key], atol=1e-6), key
        else:
            assert torch.equal(value, before[key]), key


def test_kohya_lora_changes_exactly_the_targets_by_s_alpha_over_rank_up_down(sd1, tmp_path: Path) -> None:
    model, clip, _ = sd1
    sd, deltas = kohya_lora(model, clip, SD1_UNET_TARGETS, SD1_TE_TARGETS, alpha=2.0)
    path = tmp_path / "style.safetensors"
    save_file(sd, str(path))
    unet_before, clip_before = base_weights(model), base_weights(clip)
    lmodel, lclip = apply_lora(model, clip, path, strength_model=0.7, strength_clip=-1.3)
    assert lmodel is not model and lclip is not clip and lmodel.slot is model.slot and lclip.slot is clip.slot
    assert model.patches == () and clip.patches == ()
    check_applied(unet_before, weights_of(lmodel), deltas, "unet", 0.7)
    check_applied(clip_before, weights_of(lclip), deltas, "clip", -1.3)
    # the base model is untouched once the LoRA clone has been used
    assert all(torch.equal(v, unet_before[k]) for k, v in weights_of(model).items())
    assert all(torch.equal(v, clip_before[k]) for k, v in weights_of(clip).items())
    # and the LoRA shows in what the CLIP encodes
    assert not torch.allclose(encode_text(lclip, "a photo of a cat")[0], encode_text(clip, "a photo of a cat")[0])


def test_strength_zero_gives_the_base(sd1, tmp_path: Path) -> None:
    model, clip, _ = sd1
    sd, _ = kohya_lora(model, clip, SD1_UNET_TARGETS, SD1_TE_TARGETS, alpha=RANK)
    assert apply_lora(model, clip, sd, 0.0, 0.0) == (model, clip)
    lmodel, lclip = apply_lora(model, clip, sd, 0.0, 1.0)
    assert lmodel is model and lclip is not clip
    # a patch at strength 0 leaves every weight bit-identical
    zero = model.with_patches(lora_patches(sd, model, None).model, 0.0)
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with model.use() as unet, torch.no_grad():
        base_out = unet(x, 5, encoder_hidden_states=ctx).sample.clone()
    with zero.use() as unet, torch.no_grad():
        assert torch.equal(unet(x, 5, encoder_hidden_states=ctx).sample, base_out)


def test_model_only_loader_skips_text_encoder_keys_quietly(sd1, caplog: pytest.LogCaptureFixture) -> None:
    model, clip, _ = sd1
    sd, deltas = kohya_lora(model, clip, SD1_UNET_TARGETS, SD1_TE_TARGETS, alpha=1.0)
    before = base_weights(model)
    with caplog.at_level(logging.WARNING, logger="nodes.models.lora"):
        lmodel, none = apply_lora(model, None, sd, 1.0, 1.0, name="style")
    assert none is None and caplog.text == ""
    check_applied(before, weights_of(lmodel), deltas, "unet", 1.0)
    report = lora_patches(sd, model, None)
    assert len(report.model) == 4 and len(report.skipped) == 6 and report.unmatched == []


def test_unmatched_and_unsupported_keys_are_counted_in_a_warning(sd1, caplog: pytest.LogCaptureFixture) -> None:
    model, clip, _ = sd1
    sd, _ = kohya_lora(model, clip, SD1_UNET_TARGETS, {}, alpha=1.0)
    sd["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = torch.zeros(RANK, 32)
    sd["lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight"] = torch.zeros(32, RANK)
    sd["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.zeros(RANK, 32)  # no up
    sd["lora_unet_conv_in.hada_w1_a"] = torch.zeros(4, 4)  # LoHa
    sd["something_else"] = torch.zeros(1)
    sd["lora_unet_conv_in.lora_down.weight"] = torch.zeros(RANK, 5, 3, 3)  # wrong shape for conv_in
    sd["lora_unet_conv_in.lora_up.weight"] = torch.zeros(32, RANK, 1, 1)
    report = lora_patches(sd, model, clip)
    assert len(report.model) == 4 and report.clip == {}
    assert sorted(report.unmatched) == sorted([
        "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight",
        "lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight",
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
        "something_else", "lora_unet_conv_in.lora_down.weight", "lora_unet_conv_in.lora_up.weight"])
    assert report.unsupported == ["lora_unet_conv_in.hada_w1_a"]
    with caplog.at_level(logging.WARNING, logger="nodes.models.lora"):
        apply_lora(model, clip, sd, 1.0, 1.0, name="broken.safetensors")
    assert "broken.safetensors: 7 of 19 keys were not applied (6 match no module, 1 unsupported layout)" in caplog.text


def test_diffusers_peft_layout(sd1, tmp_path: Path) -> None:
    model, clip, _ = sd1
    g = torch.Generator().manual_seed(3)
    targets = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"),
               "text_encoder.text_model.encoder.layers.1.self_attn.v_proj": ("clip", "0.encoder.layers.1.self_attn.v_proj")}
    sd, deltas = {}, {}
    for prefix, (tag, module) in targets.items():
        shape = (model if tag == "unet" else clip).slot.param_shapes[module + ".weight"]
        down, up = low_rank(shape, g)
        sd[f"{prefix}.lora_A.weight"], sd[f"{prefix}.lora_B.weight"] = down, up
        deltas[f"{tag}:{module}.weight"] = expected_delta(down, up, shape, RANK)  # no alpha: scale 1
    # the older diffusers attention-processor form
    proc_module = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0"
    shape = model.slot.param_shapes[proc_module + ".weight"]
    down, up = low_rank(shape, g)
    sd["up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight"] = down
    sd["up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight"] = up
    deltas[f"unet:{proc_module}.weight"] = expected_delta(down, up, shape, RANK)
    path = tmp_path / "peft.bin"
    torch.save(sd, path)
    assert set(load_lora_file(path)) == set(sd)
    unet_before, clip_before = base_weights(model), base_weights(clip)
    lmodel, lclip = apply_lora(model, clip, path, 1.0, 0.5)
    check_applied(unet_before, weights_of(lmodel), deltas, "unet", 1.0)
    check_applied(clip_before, weights_of(lclip), deltas, "clip", 0.5)


def test_ldm_module_names_agree_with_the_checkpoint_exporter(sd1, sdxl) -> None:
    for model in (sd1.model, sdxl.model):
        with model.use() as unet:
            state = unet.state_dict()
        ldm = unet_to_ldm(state)
        by_tensor = {id(v): k for k, v in ldm.items()}
        modules = [k[: -len(".weight")] for k in state if k.endswith(".weight")]
        names = unet_ldm_module_names(modules, model.unet_config)
        assert len(names) == len(modules)
        for module, ldm_name in names.items():
            assert by_tensor[id(state[module + ".weight"])] == ldm_name + ".weight"


def test_sdxl_kohya_lora_with_ldm_names_and_two_text_encoders(sdxl) -> None:
    model, clip, _ = sdxl
    unet_targets = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "lora_unet_middle_block_1_transformer_blocks_1_ff_net_0_proj": "mid_block.attentions.0.transformer_blocks.1.ff.net.0.proj",
        "lora_unet_output_blocks_2_1_transformer_blocks_0_attn2_to_k": "up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_k",
        "lora_unet_output_blocks_5_0_in_layers_2": "up_blocks.1.resnets.2.conv1",
        "lora_unet_label_emb_0_0": "add_embedding.linear_1",
    }
    te_targets = {
        "lora_te1_text_model_encoder_layers_0_self_attn_k_proj": "0.encoder.layers.0.self_attn.k_proj",
        "lora_te2_text_model_encoder_layers_1_mlp_fc1": "1.text_model.encoder.layers.1.mlp.fc1",
    }
    sd, deltas = kohya_lora(model, clip, unet_targets, te_targets, alpha=8.0, seed=5)
    unet_before, clip_before = base_weights(model), base_weights(clip)
    report = lora_patches(sd, model, clip)
    assert report.unmatched == [] and len(report.model) == 5 and len(report.clip) == 2
    lmodel, lclip = apply_lora(model, clip, sd, 1.0, 1.0)
    check_applied(unet_before, weights_of(lmodel), deltas, "unet", 1.0)
    check_applied(clip_before, weights_of(lclip), deltas, "clip", 1.0)


class _Sneaky:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_pickled_lora_that_would_run_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"lora_unet_conv_in.lora_down.weight": torch.zeros(1), "x": _Sneaky()}, path)
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        load_lora_file(path)
    assert "unpickling ran code" not in capsys.readouterr().out


def test_comfyui_naming_with_ldm_module_paths(sdxl) -> None:
    model, clip, _ = sdxl
    unet_targets = {"diffusion_model.input_blocks.4.1.proj_in": "down_blocks.1.attentions.0.proj_in",
                    "diffusion_model.out.2": "conv_out"}
    te_targets = {"text_encoders.clip_g.transformer.text_model.encoder.layers.0.mlp.fc2": "1.text_model.encoder.layers.0.mlp.fc2",
                  "text_encoders.clip_l.transformer.text_model.encoder.layers.1.self_attn.out_proj": "0.encoder.layers.1.self_attn.out_proj"}
    sd, deltas = kohya_lora(model, clip, unet_targets, te_targets, alpha=2.0, seed=9)
    unet_before, clip_before = base_weights(model), base_weights(clip)
    report = lora_patches(sd, model, clip)
    assert report.unmatched == [] and len(report.model) == 2 and len(report.clip) == 2
    lmodel, lclip = apply_lora(model, clip, sd, 0.5, 2.0)
    check_applied(unet_before, weights_of(lmodel), deltas, "unet", 0.5)
    check_applied(clip_before, weights_of(lclip), deltas, "clip", 2.0)
