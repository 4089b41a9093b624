"""MODEL / CLIP / VAE wrappers: cheap clones, patches merged on use and restored, VAE encode/decode."""
from __future__ import annotations

import threading

import pytest
import torch

from nodes.device import offload_device
from nodes.models.tiny import tiny_sd1, tiny_sdxl
from nodes.models.wrappers import (
    ClipWrapper, FullDelta, LowRankDelta, ModelWrapper, ModuleSlot, VaeWrapper, _tiled_map, wrap_checkpoint,
)


@pytest.fixture(scope="module")
def sd1():
    return wrap_checkpoint(tiny_sd1(0))


def unet_out(model: ModelWrapper, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, 32, generator=g)
    with model.use() as unet, torch.no_grad():
        return unet(x, 10, encoder_hidden_states=ctx).sample.clone()


def snapshot(model: ModelWrapper) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.slot.module.state_dict().items()}


def test_wrap_checkpoint_carries_family_settings(sd1) -> None:
    model, clip, vae = sd1
    assert model.family == "sd1" and model.prediction_type == "epsilon"
    assert model.latent_channels == 4 and model.latent_scale == pytest.approx(0.18215)
    assert model.scheduler_config["beta_schedule"] == "scaled_linear"
    assert clip.encoders[0].role == "clip_l" and clip.encoders[0].hidden_size == 32
    assert clip.layer_idx is None and len(clip.tokenizers) == 1
    assert vae.downscale_ratio == 8 and vae.latent_channels == 4 and vae.scaling_factor == pytest.approx(0.18215)
    assert model.memory_bytes() == sum(p.numel() * 4 for p in model.slot.module.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.slot.module.buffers())


def test_clone_shares_weights_but_not_settings(sd1) -> None:
    model = sd1.model
    other = model.clone()
    assert other is not model and other.slot is model.slot and other.is_clone(model)
    other.model_options["transformer_options"] = {"x": 1}
    other.add_hook("cfg_function", lambda args: args["cond"], name="mine")
    assert model.model_options == {} and model.hooks == ()
    third = other.clone()
    third.model_options["transformer_options"]["x"] = 2  # nested dicts are copied too
    assert other.model_options["transformer_options"]["x"] == 1
    assert [h.name for h in third.hooks] == ["mine"]
    hooked = model.with_hook("unet_wrapper", print).with_hook("unet_wrapper", repr)
    assert hooked.hooks_of("unet_wrapper") == [print, repr] and model.hooks_of("unet_wrapper") == []


def test_patches_merge_on_use_and_restore_exactly(sd1) -> None:
    base = sd1.model
    base_out = unet_out(base)  # restores whatever another test merged
    before = snapshot(base)
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    diff = torch.randn(before[key].shape)
    patched = base.with_patches({key: FullDelta(diff)}, 0.5)
    assert base.patches == () and len(patched.patches) == 1 and patched.patch_id != 0
    out = unet_out(patched)
    assert not torch.allclose(out, base_out)
    merged = snapshot(patched)
    assert torch.allclose(merged[key], before[key] + 0.5 * diff, atol=1e-6)
    assert all(torch.equal(merged[k], before[k]) for k in before if k != key)
    # the base wrapper gets the original weights back, bit for bit
    assert torch.equal(unet_out(base), base_out)
    assert all(torch.equal(v, before[k]) for k, v in snapshot(base).items())
    # and the patched one is re-merged from the originals (no drift after many switches)
    for _ in range(3):
        unet_out(patched)
        unet_out(base)
    assert torch.equal(unet_out(patched), out)
    base.slot.restore()
    assert all(torch.equal(v, before[k]) for k, v in snapshot(base).items())


def test_several_variants_share_one_module(sd1) -> None:
    base = sd1.model
    key = "up_blocks.1.resnets.0.conv1.weight"  # a 3x3 convolution
    shape = base.slot.param_shapes[key]
    up, down = torch.randn(shape[0], 2), torch.randn(2, shape[1], 3, 3)
    a = base.with_patches({key: LowRankDelta(up, down, scale=0.5)}, 1.0)
    b = base.with_patches({key: LowRankDelta(up, down, scale=0.5)}, -2.0)
    with base.use() as unet:
        original = unet.get_parameter(key).detach().clone()
    expected = (up @ down.flatten(1)).reshape(shape) * 0.5
    with a.use() as unet_a:
        wa = unet_a.get_parameter(key).detach().clone()
    with b.use() as unet_b:
        wb = unet_b.get_parameter(key).detach().clone()
    assert unet_a is unet_b  # one module, re-patched
    assert torch.allclose(wa, original + expected, atol=1e-5)
    assert torch.allclose(wb, original - 2 * expected, atol=1e-5)
    assert base.memory_bytes() == a.memory_bytes()


def test_strength_model_scales_the_base_weight(sd1) -> None:
    base = sd1.model
    key = "conv_in.weight"
    with base.use() as unet:
        original = unet.get_parameter(key).detach().clone()
    scaled = base.with_patches({key: FullDelta(torch.zeros(original.shape))}, 1.0, strength_model=0.25)
    with scaled.use() as unet:
        assert torch.allclose(unet.get_parameter(key), original * 0.25)
    with base.use() as unet:
        assert torch.equal(unet.get_parameter(key), original)


def test_add_patches_skips_unknown_keys_and_rejects_misfits(sd1) -> None:
    model = sd1.model.clone()
    assert model.add_patches({"no.such.weight": FullDelta(torch.zeros(1))}) == []
    assert model.patches == () and model.patch_id == 0
    with pytest.raises(ValueError, match="does not fit the weight of shape"):
        model.add_patches({"conv_in.weight": FullDelta(torch.zeros(3))})


def test_nested_use_of_two_patch_sets_is_refused_same_set_is_fine(sd1) -> None:
    base = sd1.model
    patched = base.with_patches({"conv_in.bias": FullDelta(torch.ones(32))})
    with base.use():
        with base.clone().use():  # same (empty) patch set: fine
            pass
        with pytest.raises(RuntimeError, match="another patch set"):
            with patched.use():
                pass
    with patched.use():  # nothing is left locked
        pass


def test_other_thread_waits_for_a_different_patch_set(sd1) -> None:
    base = sd1.model
    patched = base.with_patches({"conv_in.bias": FullDelta(torch.ones(32))})
    with base.use() as unet:  # another test may have left a patch set merged
        original_bias = unet.conv_in.bias.detach().clone()
    seen: list[torch.Tensor] = []
    entered = threading.Event()

    def other() -> None:
        entered.set()
        with patched.use() as unet:
            seen.append(unet.conv_in.bias.detach().clone())

    with base.use() as unet:
        t = threading.Thread(target=other)
        t.start()
        entered.wait()
        t.join(0.2)
        assert t.is_alive()  # blocked while the base weights are in use
        assert torch.equal(unet.conv_in.bias, original_bias)
    t.join(10)
    assert not t.is_alive() and torch.allclose(seen[0], original_bias + 1)


def test_patching_inside_inference_mode(sd1) -> None:
    base = sd1.model
    patched = base.with_patches({"conv_in.bias": FullDelta(torch.ones(32))})
    with torch.inference_mode():
        a = unet_out(patched)
        b = unet_out(base)
    assert not torch.equal(a, b)
    assert torch.equal(unet_out(base), b)


def test_clip_layer_choice_is_per_clone(sd1) -> None:
    clip = sd1.clip
    skip = clip.with_layer_idx(-2)
    assert skip.layer_idx == -2 and clip.layer_idx is None and skip.slot is clip.slot
    with pytest.raises(ValueError, match="must be negative"):
        clip.with_layer_idx(0)
    with pytest.raises(ValueError, match="tokenizers for"):
        ClipWrapper(list(clip.slot.module), [], family="sd1")


def test_slot_role_is_checked() -> None:
    with pytest.raises(ValueError, match="role 'text'"):
        ModuleSlot(torch.nn.Linear(2, 2), role="text")


# ----- VAE -----------------------------------------------------------------------------------------
def test_vae_encode_decode_match_diffusers(sd1) -> None:
    vae: VaeWrapper = sd1.vae
    module = vae.slot.module
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 32, 48, 3, generator=g)
    latents = vae.encode(pixels)
    assert latents.shape == (2, 4, 4, 6) and latents.dtype == torch.float32 and latents.device == offload_device()
    with torch.no_grad():
        raw = module.encode(pixels.movedim(-1, 1) * 2 - 1).latent_dist.mean
        expected_img = ((module.decode(raw).sample + 1) / 2).clamp(0, 1).movedim(1, -1)
    assert torch.allclose(latents, raw, atol=1e-6)  # raw VAE latents, as ComfyUI's LATENT holds them
    assert torch.allclose(vae.process_in(latents), raw * 0.18215, atol=1e-6)
    image = vae.decode(latents)
    assert image.shape == (2, 32, 48, 3) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert torch.allclose(image, expected_img, atol=1e-5)


def test_vae_encode_crops_to_multiples_of_8_centred_and_drops_alpha(sd1) -> None:
    vae = sd1.vae
    pixels = torch.rand(1, 37, 45, 4)
    cropped = vae.crop_pixels(pixels)
    assert cropped.shape == (1, 32, 40, 3)
    assert torch.equal(cropped, pixels[:, 2:34, 2:42, :3])
    assert vae.encode(pixels).shape == (1, 4, 4, 5)
    assert torch.allclose(vae.encode(pixels), vae.encode(pixels[:, 2:34, 2:42, :3]))
    with pytest.raises(ValueError, match="smaller than 8 pixels"):
        vae.encode(torch.rand(1, 7, 16, 3))
    with pytest.raises(ValueError, match=r"latents must be \[B,4,h,w\]"):
        vae.decode(torch.zeros(1, 3, 4, 4))


def test_tiled_blend_is_exact_for_a_local_function() -> None:
    x = torch.randn(2, 4, 13, 21)
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=8, mode="nearest")  # noqa: E731
    tiled = _tiled_map(x, up, tile=6, overlap=2, scale=8, out_channels=4)
    assert torch.allclose(tiled, up(x), atol=1e-6)
    down = lambda t: torch.nn.functional.avg_pool2d(t, 8)  # noqa: E731
    img = torch.randn(1, 3, 64, 96)
    assert torch.allclose(_tiled_map(img, down, tile=32, overlap=16, scale=1 / 8, out_channels=3), down(img), atol=1e-6)


def test_vae_tiled_matches_untiled(sd1) -> None:
    vae = sd1.vae
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(1, 4, 12, 16, generator=g) / vae.scaling_factor  # raw latents of a typical range
    full = vae.decode(latents)
    # one tile covering everything is the untiled decode
    assert torch.allclose(vae.decode_tiled(latents, tile_size=256, overlap=64), full, atol=1e-6)
    # smaller tiles approximate it; blended overlaps do better than hard seams, bigger tiles better still
    err = {(t, o): (vae.decode_tiled(latents, tile_size=t, overlap=o) - full).abs().mean().item()
           for t, o in ((64, 0), (64, 32), (96, 48))}
    assert err[(96, 48)] < err[(64, 32)] < err[(64, 0)] and err[(64, 32)] < 0.3 * full.std()
    pixels = torch.rand(1, 96, 128, 3, generator=g)
    enc = vae.encode(pixels)
    assert torch.allclose(vae.encode_tiled(pixels, tile_size=512), enc, atol=1e-6)
    err = {(t, o): (vae.encode_tiled(pixels, tile_size=t, overlap=o) - enc).abs().mean().item()
           for t, o in ((64, 0), (64, 32), (96, 48))}
    assert err[(96, 48)] < err[(64, 32)] < err[(64, 0)] and err[(64, 32)] < 0.3 * enc.abs().mean()
    assert vae.encode_tiled(pixels, tile_size=64, overlap=32).shape == enc.shape
    with pytest.raises(ValueError, match="overlap 64 must be >= 0 and smaller than tile_size 64"):
        vae.decode_tiled(latents, tile_size=64, overlap=64)


def test_sdxl_wrappers(tmp_path) -> None:
    model, clip, vae = wrap_checkpoint(tiny_sdxl(0))
    assert model.family == "sdxl" and model.latent_scale == pytest.approx(0.13025)
    assert [e.role for e in clip.encoders] == ["clip_l", "clip_g"] and clip.encoders[1].projected
    assert vae.scaling_factor == pytest.approx(0.13025)
    assert model.unet_config["addition_embed_type"] == "text_time"
