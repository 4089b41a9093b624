"""Detection, sizes and loading of single files, component files and diffusers folders, and their errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes import device as devices
from nodes.models import detect, ldm_export, tiny
from nodes.models.checkpoint import (
    CheckpointParts,
    detect_file,
    load_checkpoint,
    load_diffusers_folder,
    load_text_encoder_file,
    load_unet_file,
    load_vae_file,
)
from nodes.models.detect import CheckpointError

EXPECTED = {  # tiny name -> family, variant, prediction type, builder options
    "sd1": ("sd1", "base", "epsilon", {}),
    "sd2": ("sd2", "base", "v_prediction", {}),
    "sdxl": ("sdxl", "base", "epsilon", {}),
    "sdxl_refiner": ("sdxl_refiner", "base", "epsilon", {}),
    "sd2_depth": ("sd2", "depth", "epsilon", {}),
    "inpaint": ("sd1", "inpaint", "epsilon", {}),
}


@pytest.fixture(scope="module")
def built() -> dict[str, CheckpointParts]:
    return {name: tiny.tiny_parts(name) for name in EXPECTED}


@pytest.fixture(scope="module")
def files(built: dict[str, CheckpointParts], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    return {name: ldm_export.save_checkpoint(parts, folder / f"{name}.safetensors") for name, parts in built.items()}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detects_every_tiny_family(files: dict[str, Path], name: str) -> None:
    family, variant, prediction, _ = EXPECTED[name]
    spec = detect_file(files[name])
    assert (spec.family, spec.variant, spec.prediction_type) == (family, variant, prediction)
    roles = {"sd1": ["clip_l"], "sd2": ["clip_h"], "sdxl": ["clip_l", "clip_g"], "sdxl_refiner": ["clip_g"]}
    assert [te.role for te in spec.text_encoders] == roles[family]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sizes_read_from_shapes_equal_the_build_configs(built: dict[str, CheckpointParts], files: dict[str, Path],
                                                         name: str) -> None:
    spec = detect_file(files[name])
    parts = built[name]
    v_pred = parts.prediction_type == "v_prediction"
    unet_cfg = tiny.tiny_unet_config(parts.family, in_channels=parts.unet.config.in_channels, v_prediction=v_pred)
    assert spec.unet_config == unet_cfg
    assert spec.vae_config == tiny.tiny_vae_config(parts.family, v_prediction=v_pred)
    for te in spec.text_encoders:
        assert te.config == tiny.tiny_text_encoder_config(te.role), te.role
    assert [te.with_projection for te in spec.text_encoders] == [r == "clip_g" for r in parts.text_encoder_roles]


def _full_size_shapes(family: str) -> dict[str, tuple[int, ...]]:
    """Shapes of a real-size checkpoint in the original layout, from modules on the meta device."""
    from accelerate import init_empty_weights

    configs = {"sd1": (tiny.full_sd15_unet_config(), tiny.full_sd15_vae_config(), [tiny.full_clip_l_config()]),
               "sd2": (tiny.full_sd2_unet_config(), tiny.full_sd15_vae_config(), [tiny.full_sd2_text_encoder_config()]),
               "sdxl": (tiny.full_sdxl_unet_config(), tiny.full_sdxl_vae_config(),
                        tiny.full_sdxl_text_encoder_configs())}
    unet, vae, texts = configs[family]
    with init_empty_weights():
        parts = tiny.random_parts(family, unet_config=unet, vae_config=vae, text_encoder_configs=texts,
                                  prediction_type="v_prediction" if family == "sd2" else "epsilon")
    return {k: tuple(v.shape) for k, v in ldm_export.checkpoint_to_ldm(parts).items()}


@pytest.mark.parametrize(("family", "heads", "diffusers_type"), [
    ("sd1", [8, 8, 8, 8], "v1"), ("sd2", [5, 10, 20, 20], "v2"), ("sdxl", [5, 10, 20], "xl_base")])
def test_full_size_layouts_detect_with_published_configs(family: str, heads: list[int], diffusers_type: str) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    shapes = _full_size_shapes(family)
    spec = detect.detect_checkpoint(shapes, source=f"<full {family}>", prediction_type="epsilon")
    assert spec.family == family
    assert spec.unet_config["attention_head_dim"] == heads
    assert spec.unet_config["norm_num_groups"] == 32 and spec.vae_config["norm_num_groups"] == 32
    assert [te.config["num_attention_heads"] for te in spec.text_encoders] == \
        {"sd1": [12], "sd2": [16], "sdxl": [12, 20]}[family]
    # diffusers' own detection reads our exported layout as the real thing.
    assert infer_diffusers_model_type({k: torch.empty(s, device="meta") for k, s in shapes.items()}) == diffusers_type


def test_sd2_v_prediction_heuristic_without_marker() -> None:
    parts = tiny.tiny_sd2(v_prediction=False)
    sd = ldm_export.checkpoint_to_ldm(parts)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert detect.detect_checkpoint(shapes, source="x", tensor=sd.__getitem__).prediction_type == "epsilon"
    key = "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.norm1.bias"
    wide = dict(sd, **{key: torch.randn(sd[key].shape, generator=torch.Generator().manual_seed(0)) * 0.5})
    spec = detect.detect_checkpoint(shapes, source="x", tensor=wide.__getitem__)
    assert spec.prediction_type == "v_prediction" and key in spec.notes[0]
    overridden = detect.detect_checkpoint(shapes, source="x", tensor=wide.__getitem__, prediction_type="epsilon")
    assert overridden.prediction_type == "epsilon"


def test_prediction_override_when_loading(files: dict[str, Path]) -> None:
    parts = load_checkpoint(files["sd2"], parts=("unet",), prediction_type="epsilon")
    assert parts.prediction_type == "epsilon" == parts.scheduler_config["prediction_type"]
    with pytest.raises(CheckpointError, match="'x_prediction'"):
        load_checkpoint(files["sd2"], prediction_type="x_prediction")


def test_made_up_layout_fails_naming_file_and_contents(tmp_path: Path) -> None:
    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.layer.0.attention.weight": torch.ones(4, 4), "head.bias": torch.ones(4)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "no UNet" in message and "encoder.layer" in message


def test_mismatched_parts_fail_naming_the_rule(built: dict[str, CheckpointParts], tmp_path: Path) -> None:
    sd1 = ldm_export.checkpoint_to_ldm(built["sd1"])
    sdxl_text = {k: v for k, v in ldm_export.checkpoint_to_ldm(built["sdxl"]).items() if k.startswith("conditioner.")}
    path = tmp_path / "franken.safetensors"
    save_file({k: v for k, v in sd1.items() if not k.startswith("cond_stage_model.")} | sdxl_text, path)
    with pytest.raises(CheckpointError, match="franken.safetensors: UNet cross-attention width 32 does not match"):
        load_checkpoint(path)


def test_uneven_unet_fails_clearly(built: dict[str, CheckpointParts], tmp_path: Path) -> None:
    sd = ldm_export.checkpoint_to_ldm(built["sd1"])
    path = tmp_path / "uneven.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("model.diffusion_model.input_blocks.2.")}, path)
    with pytest.raises(CheckpointError, match="uneven.safetensors.*levels have \\[1, 2\\] resblocks"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------- loading


def test_loads_on_policy_dtype_and_offload_device_and_parts(files: dict[str, Path]) -> None:
    parts = load_checkpoint(files["sdxl"])
    assert parts.unet.dtype == devices.compute_dtype() and parts.vae.dtype == devices.vae_dtype()
    assert parts.unet.device == devices.offload_device()
    assert not parts.unet.training and not any(p.requires_grad for p in parts.unet.parameters())
    assert [type(e).__name__ for e in parts.text_encoders] == ["CLIPTextModel", "CLIPTextModelWithProjection"]
    assert parts.extra["layout"] == "ldm" and parts.extra["unused_keys"] == []
    assert parts.vae.config.scaling_factor == 0.13025
    only = load_checkpoint(files["sdxl"], parts=("unet",))
    assert only.vae is None and only.text_encoders == [] and only.tokenizers == []
    with pytest.raises(ValueError, match="'lora'"):
        load_checkpoint(files["sdxl"], parts=("unet", "lora"))


def test_explicit_dtype_and_fp16_files(built: dict[str, CheckpointParts], files: dict[str, Path],
                                       tmp_path: Path) -> None:
    half = load_checkpoint(files["sd1"], dtype=torch.float16)
    assert {p.dtype for p in half.unet.parameters()} == {torch.float16}
    assert half.text_encoders[0].dtype == torch.float16
    fp16_file = ldm_export.save_checkpoint(built["sd1"], tmp_path / "sd1-fp16.safetensors", dtype=torch.float16)
    upcast = load_checkpoint(fp16_file, dtype=torch.float32)
    w = "conv_in.weight"
    assert upcast.unet.state_dict()[w].dtype == torch.float32
    assert torch.equal(upcast.unet.state_dict()[w], built["sd1"].unet.state_dict()[w].half().float())


def test_memory_mapped_weights_are_private_copies_on_write(files: dict[str, Path]) -> None:
    before = files["sd1"].read_bytes()
    parts = load_checkpoint(files["sd1"])
    with torch.no_grad():
        parts.unet.conv_in.weight.add_(1.0)
    assert files["sd1"].read_bytes() == before
    again = load_checkpoint(files["sd1"], mmap=False)
    assert torch.equal(again.unet.conv_in.weight + 1.0, parts.unet.conv_in.weight)


def test_sd2_keeps_every_layer_and_its_projection(built: dict[str, CheckpointParts], files: dict[str, Path]) -> None:
    parts = load_checkpoint(files["sd2"])
    assert parts.text_encoders[0].config.num_hidden_layers == 2
    assert parts.extra["clip_defaults"] == [{"layer": -2, "final_norm": True}]
    assert torch.equal(parts.extra["text_projections"]["clip_h"], built["sd2"].extra["text_projections"]["clip_h"])


def test_ckpt_file_loads_through_safe_unpickling(built: dict[str, CheckpointParts], tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": ldm_export.checkpoint_to_ldm(built["sd1"]), "global_step": 470000}, path)
    parts = load_checkpoint(path)
    assert parts.family == "sd1"
    assert _same(parts.unet, built["sd1"].unet) and _same(parts.text_encoders[0], built["sd1"].text_encoders[0])


def test_diffusers_layout_single_file(built: dict[str, CheckpointParts], tmp_path: Path) -> None:
    parts = built["sdxl"]
    sd = {f"unet.{k}": v for k, v in parts.unet.state_dict().items()}
    sd |= {f"vae.{k}": v for k, v in parts.vae.state_dict().items()}
    sd |= {f"text_encoder.{k}": v for k, v in parts.text_encoders[0].state_dict().items()}
    sd |= {f"text_encoder_2.{k}": v for k, v in parts.text_encoders[1].state_dict().items()}
    path = tmp_path / "diffusers-layout.safetensors"
    save_file(sd, path)
    loaded = load_checkpoint(path)
    assert (loaded.family, loaded.extra["layout"]) == ("sdxl", "diffusers")
    assert _same(loaded.unet, parts.unet) and _same(loaded.vae, parts.vae)
    assert all(_same(a, b) for a, b in zip(loaded.text_encoders, parts.text_encoders))


# ---------------------------------------------------------------------------------- diffusers folders


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_diffusers_folder(built: dict[str, CheckpointParts], tmp_path: Path, name: str) -> None:
    folder = ldm_export.write_diffusers_folder(built[name], tmp_path / name)
    parts = load_diffusers_folder(folder)
    family, variant, prediction, _ = EXPECTED[name]
    assert (parts.family, parts.variant, parts.prediction_type) == (family, variant, prediction)
    assert parts.extra["layout"] == "diffusers_folder"
    assert _same(parts.unet, built[name].unet) and _same(parts.vae, built[name].vae)
    assert all(_same(a, b) for a, b in zip(parts.text_encoders, built[name].text_encoders))
    assert parts.tokenizers == built[name].tokenizers
    assert parts.tokenizers[-1]("cat!!").input_ids == [49406, 2368, 748, 49407]


def test_sd2_folder_conditions_like_the_single_file(built: dict[str, CheckpointParts], files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    folder = load_diffusers_folder(ldm_export.write_diffusers_folder(built["sd2"], tmp_path / "sd2"),
                                   parts=("clip",))
    single = load_checkpoint(files["sd2"], parts=("clip",))
    ids = single.tokenizers[0](["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    states = []
    with torch.inference_mode():
        for parts in (single, folder):
            encoder, default = parts.text_encoders[0], parts.extra["clip_defaults"][0]
            hidden = encoder(ids, output_hidden_states=True).hidden_states[default["layer"]]
            states.append(encoder.final_layer_norm(hidden))
    assert folder.text_encoders[0].config.num_hidden_layers == 1
    assert torch.equal(states[0], states[1])


def test_not_a_diffusers_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no model_index.json"):
        load_diffusers_folder(tmp_path)


# ------------------------------------------------------------------------------------ component files


def test_unet_files_in_three_layouts(built: dict[str, CheckpointParts], tmp_path: Path) -> None:
    unet = built["sdxl"].unet
    ldm = ldm_export.unet_to_ldm(unet.state_dict())
    layouts = {"bare": ldm, "prefixed": {f"model.diffusion_model.{k}": v for k, v in ldm.items()},
               "diffusers": dict(unet.state_dict())}
    for name, sd in layouts.items():
        save_file(sd, tmp_path / f"{name}.safetensors")
        parts = load_unet_file(tmp_path / f"{name}.safetensors")
        assert parts.family == "sdxl" and parts.vae is None and parts.text_encoders == [], name
        assert _same(parts.unet, unet), name
    save_file(ldm_export.unet_to_ldm(built["sd2"].unet.state_dict()), tmp_path / "sd2.safetensors")
    assert load_unet_file(tmp_path / "sd2.safetensors", prediction_type="v_prediction").family == "sd2"


def test_vae_files(built: dict[str, CheckpointParts], files: dict[str, Path], tmp_path: Path) -> None:
    vae = built["sd1"].vae
    ldm = ldm_export.vae_to_ldm(vae.state_dict())
    layouts = {"bare": ldm, "prefixed": {f"first_stage_model.{k}": v for k, v in ldm.items()},
               "diffusers": dict(vae.state_dict())}
    for name, sd in layouts.items():
        ldm_export.save_state_dict(sd, tmp_path / f"{name}.safetensors")
        loaded = load_vae_file(tmp_path / f"{name}.safetensors")
        assert _same(loaded, vae) and loaded.config.scaling_factor == 0.18215, name
    assert load_vae_file(files["sdxl"]).config.scaling_factor == 0.13025
    assert load_vae_file(tmp_path / "bare.safetensors", scaling_factor=0.5).config.scaling_factor == 0.5


def test_text_encoder_files(built: dict[str, CheckpointParts], files: dict[str, Path], tmp_path: Path) -> None:
    clip_l, clip_g = built["sdxl"].text_encoders
    clip_h = built["sd2"].text_encoders[0]
    cases = {
        "clip_l.safetensors": (dict(clip_l.state_dict()), "stable_diffusion", "sd1", ["clip_l"], clip_l),
        "clip_g_hf.safetensors": (dict(clip_g.state_dict()), "sdxl", "sdxl", ["clip_g"], clip_g),
        "clip_g_openclip.safetensors": (ldm_export.open_clip_to_ldm(clip_g.state_dict()), "sdxl", "sdxl",
                                        ["clip_g"], clip_g),
        "clip_h_openclip.safetensors": (ldm_export.open_clip_to_ldm(clip_h.state_dict()), "stable_diffusion", "sd2",
                                        ["clip_h"], clip_h),
    }
    for name, (sd, kind, family, roles, reference) in cases.items():
        save_file(sd, tmp_path / name)
        parts = load_text_encoder_file(tmp_path / name, kind)
        assert (parts.family, parts.text_encoder_roles) == (family, roles), name
        assert parts.unet is None and _same(parts.text_encoders[0], reference), name
    whole = load_text_encoder_file(files["sdxl"], "sdxl")
    assert whole.text_encoder_roles == ["clip_l", "clip_g"]
    with pytest.raises(ValueError, match="'flux'"):
        load_text_encoder_file(files["sdxl"], "flux")


# ------------------------------------------------------------------------------------- broken files


def test_broken_files_name_the_file(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["sd1"].read_bytes()
    cases = {
        "truncated.safetensors": data[: len(data) // 2],
        "header-cut.safetensors": data[:100],
        "garbage.safetensors": b"\x00\x01not a model at all" * 10,
        "empty.safetensors": b"",
        "bad-json.safetensors": (20).to_bytes(8, "little") + b"{not json at all!!!}",
        "random.ckpt": bytes(range(256)) * 4,
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value), (name, str(err.value))
    for loader in (load_checkpoint, load_unet_file, load_vae_file, load_text_encoder_file):
        with pytest.raises(CheckpointError, match="missing.safetensors: no such file"):
            loader(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_missing_parts_fail_with_advice(built: dict[str, CheckpointParts], tmp_path: Path) -> None:
    sd = ldm_export.checkpoint_to_ldm(built["sd1"])
    path = tmp_path / "no-vae.safetensors"
    save_file({k: v for k, v in sd.items() if not k.startswith("first_stage_model.")}, path)
    with pytest.raises(CheckpointError, match="no-vae.safetensors: has no VAE"):
        load_checkpoint(path)
    assert load_checkpoint(path, parts=("unet", "clip")).vae is None
    with pytest.raises(CheckpointError, match="no VAE found"):
        load_vae_file(path)
    cut = tmp_path / "cut-unet.safetensors"
    save_file({k: v for k, v in sd.items() if k != "model.diffusion_model.out.2.weight"}, cut)
    with pytest.raises(CheckpointError, match="cut-unet.safetensors: UNet key 'model.diffusion_model.out.2.weight'"):
        load_checkpoint(cut)
