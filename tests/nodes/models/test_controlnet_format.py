"""ControlNet files: both layouts, configs read from shapes (reduced sizes too), difference files, refusals."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.models import controlnet_format as cf
from nodes.models.ldm_export import unet_to_ldm
from nodes.models.tiny import tiny_parts
from nodes.models.tiny_control import tiny_controlnet

# Config entries the loader must reproduce exactly (the rest are defaults or unused by the weights).
STRUCTURE = ("in_channels", "conditioning_channels", "down_block_types", "mid_block_type", "block_out_channels",
             "layers_per_block", "attention_head_dim", "use_linear_projection", "norm_num_groups",
             "addition_embed_type", "projection_class_embeddings_input_dim")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb), sorted(set(sa) ^ set(sb))[:5]
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _same_outputs(a: Any, b: Any, *, size: int = 8, context: int = 32, sdxl_adm: int | None = None) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, size, size, generator=g)
    hint = torch.rand(2, a.config.conditioning_channels, size * 8, size * 8, generator=g)
    kwargs: dict[str, Any] = {"encoder_hidden_states": torch.randn(2, 77, context, generator=g),
                              "controlnet_cond": hint, "return_dict": False}
    if sdxl_adm is not None:
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(2, sdxl_adm - 6 * 256, generator=g),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad():
        da, ma = a(x, torch.tensor([500.0, 500.0]), **kwargs)
        db, mb = b(x, torch.tensor([500.0, 500.0]), **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(da, db)) and torch.equal(ma, mb)


@pytest.mark.parametrize(("family", "context"), [("sd1", 32), ("sd2", 32), ("sdxl", 96)])
@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_single_files_load_with_their_configuration_read_from_shapes(tmp_path: Path, family: str, context: int,
                                                                     layout: str) -> None:
    controlnet = tiny_controlnet(family)
    path = cf.save_controlnet(controlnet, tmp_path / f"{family}.safetensors", layout=layout)
    keys = set(load_file(str(path)))
    assert all(k.startswith(cf.CONTROL_PREFIX) for k in keys) == (layout == "original")
    loaded = cf.load_controlnet_file(path, dtype=torch.float32)
    assert (loaded.family, loaded.layout, loaded.difference) == (family, layout, False)
    for key in STRUCTURE:
        assert loaded.module.config.get(key) == controlnet.config.get(key), key
    _same_weights(controlnet, loaded.module)
    _same_outputs(controlnet, loaded.module, context=context,
                  sdxl_adm=controlnet.config.projection_class_embeddings_input_dim if family == "sdxl" else None)


def test_reduced_size_controlnets_are_read_from_shapes(tmp_path: Path) -> None:
    # An SDXL ControlNet with an attention level of no transformer layers, a middle block without
    # attention and a smaller hint encoder; an SD1 one whose hint encoder only halves the picture.
    small_xl = tiny_controlnet("sdxl", transformer_layers_per_block=[1, 0], mid_block_type="UNetMidBlock2D",
                               conditioning_embedding_out_channels=(8, 8, 16, 16))
    small_sd1 = tiny_controlnet("sd1", conditioning_embedding_out_channels=(8, 16), conditioning_channels=1)
    for name, controlnet in (("xl", small_xl), ("sd1", small_sd1)):
        for layout in ("original", "diffusers"):
            loaded = cf.load_controlnet_file(cf.save_controlnet(controlnet, tmp_path / f"{name}-{layout}.safetensors",
                                                                layout=layout), dtype=torch.float32)
            _same_weights(controlnet, loaded.module)
            assert loaded.module.config.mid_block_type == controlnet.config.mid_block_type
    xl = cf.load_controlnet_file(tmp_path / "xl-original.safetensors")
    assert xl.spec.config["transformer_layers_per_block"][1] == 0 and xl.spec.hint_downscale == 8
    sd1 = cf.load_controlnet_file(tmp_path / "sd1-original.safetensors")
    assert sd1.spec.hint_downscale == 2 and sd1.spec.config["conditioning_channels"] == 1


def test_our_key_mapping_agrees_with_diffusers_converter_and_the_demo_exporter(tmp_path: Path) -> None:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    from nodes.demo_model.controlnet_export import controlnet_to_ldm, save_controlnet

    controlnet = tiny_controlnet("sd1")
    state = controlnet.state_dict()
    original = cf.diffusers_to_original(state)
    assert original.keys() == controlnet_to_ldm(state).keys()
    theirs = convert_controlnet_checkpoint({cf.CONTROL_PREFIX + k: v for k, v in original.items()},
                                           dict(controlnet.config))
    ours = cf.original_to_diffusers(original)
    assert ours.keys() == theirs.keys() == state.keys()
    assert all(ours[k] is theirs[k] for k in ours)
    # The demo model's exporter writes files this loader reads back unchanged.
    demo = cf.load_controlnet_file(save_controlnet(controlnet, tmp_path / "demo.safetensors"), dtype=torch.float32)
    _same_weights(controlnet, demo.module)


def test_a_diffusers_folder_uses_its_config(tmp_path: Path) -> None:
    controlnet = tiny_controlnet("sd1", global_pool_conditions=True)
    folder = cf.write_controlnet_folder(controlnet, tmp_path / "cn-folder")
    by_file = cf.load_controlnet_file(folder / "diffusion_pytorch_model.safetensors", dtype=torch.float32)
    by_folder = cf.load_controlnet_file(folder, dtype=torch.float32)
    for loaded in (by_file, by_folder):
        assert loaded.global_pool and any("config.json" in n for n in loaded.spec.notes)
        _same_weights(controlnet, loaded.module)


def test_shuffle_controlnets_pool_globally_by_name_as_comfyui(tmp_path: Path) -> None:
    path = cf.save_controlnet(tiny_controlnet("sd1"), tmp_path / "control_v11e_sd15_shuffle.safetensors")
    assert cf.load_controlnet_file(path).global_pool
    assert not cf.global_pool_by_name("control_v11p_sd15_canny.safetensors")


def test_difference_controlnets_add_the_base_model(tmp_path: Path) -> None:
    unet = tiny_parts("sd1").unet
    controlnet = tiny_controlnet("sd1")
    base = unet_to_ldm(unet.state_dict())
    original = cf.diffusers_to_original(controlnet.state_dict())
    diff = {k: v - base[k] if k.startswith(cf.UNET_PARTS) and k in base else v for k, v in original.items()}
    state = {cf.CONTROL_PREFIX + k: v.contiguous() for k, v in diff.items()}
    state[cf.DIFFERENCE_KEY] = torch.tensor([])
    path = tmp_path / "diff_control_sd15.safetensors"
    save_file(state, str(path))
    with pytest.raises(cf.ControlNetFormatError, match="DiffControlNetLoader"):
        cf.load_controlnet_file(path)
    loaded = cf.load_controlnet_file(path, base_unet=lambda: base, dtype=torch.float32)
    assert loaded.difference
    for key, value in controlnet.state_dict().items():
        assert torch.allclose(loaded.module.state_dict()[key], value, atol=1e-6), key
    wrong = {k: v[..., :1] if v.ndim == 4 else v for k, v in base.items()}
    with pytest.raises(cf.ControlNetFormatError, match="another model"):
        cf.load_controlnet_file(path, base_unet=wrong)


@pytest.mark.parametrize(("state", "message"), [
    ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, "not a ControlNet"),
    ({"lora_controlnet": torch.zeros(1), "input_blocks.0.0.weight": torch.zeros(1)}, "Control-LoRA"),
    ({"adapter.body.0.resnets.0.block1.weight": torch.zeros(1)}, "T2I-Adapter"),
])
def test_other_files_are_refused_with_their_name(tmp_path: Path, state: dict[str, torch.Tensor], message: str) -> None:
    path = tmp_path / "not-a-controlnet.safetensors"
    save_file(state, str(path))
    with pytest.raises(cf.ControlNetFormatError, match=message) as info:
        cf.load_controlnet_file(path)
    assert str(path) in str(info.value)


def test_inconsistent_shapes_are_reported(tmp_path: Path) -> None:
    state = cf.diffusers_to_original(tiny_controlnet("sd1").state_dict())
    del state["zero_convs.3.0.weight"], state["zero_convs.3.0.bias"]
    path = tmp_path / "cut.safetensors"
    save_file({cf.CONTROL_PREFIX + k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(cf.ControlNetFormatError, match="zero convolutions"):
        cf.load_controlnet_file(path)
