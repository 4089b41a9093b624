"""ControlNet nodes on tiny real models: step ranges, stacking, step-level switching, hints, batches, samplers, errors."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from graph.cache import estimate_nbytes
from graph.validation import validate_prompt
from nodes import controlnet_nodes as C, loaders, sampler_nodes as S, text_nodes as T
from nodes.controlnet import ControlImageError, ControlNet, apply_control_to_uncond, broadcast_hint
from nodes.guidance import model_sampling
from nodes.latent import EmptyLatentImage, SetLatentNoiseMask
from nodes.models.tiny import write_tiny_checkpoint
from nodes.models.tiny_control import write_tiny_control_models, write_tiny_controlnet
from nodes.sampling import SAMPLER_NAMES
from nodes.vae_nodes import InpaintModelConditioning, VAEEncode

from .conftest import txt2img

SECOND = "tiny-controlnet-sd1-b.safetensors"
SDXL = "tiny-controlnet-sdxl.safetensors"


@pytest.fixture(scope="module")
def names(model_base: Path) -> dict[str, str]:
    models = model_base / "models"
    out = dict(write_tiny_control_models(models))
    for name, family, seed in ((SECOND, "sd1", 1), (SDXL, "sdxl", 0)):
        if not (models / "controlnet" / name).is_file():
            write_tiny_controlnet(models / "controlnet" / name, family, seed)
    if not (models / "checkpoints" / "tiny-inpaint.safetensors").is_file():
        write_tiny_checkpoint(models / "checkpoints", "inpaint", name="tiny-inpaint")
    return {**out, "second": SECOND, "sdxl": SDXL}


def _image(seed: int, height: int = 32, width: int = 32, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _setup(ckpt: str = "tiny-sd1.safetensors") -> tuple[Any, Any, Any, Any, Any]:
    model, clip, vae = loaders.CheckpointLoaderSimple(ckpt_name=ckpt)
    return model, clip, vae, T.CLIPTextEncode(text="a red circle", clip=clip), T.CLIPTextEncode(text="blurry", clip=clip)


def _apply(pos: Any, neg: Any, cn: ControlNet, image: torch.Tensor, strength: float = 1.0, start: float = 0.0,
           end: float = 1.0) -> tuple[Any, Any]:
    return C.ControlNetApplyAdvanced(positive=pos, negative=neg, control_net=cn, image=image, strength=strength,
                                     start_percent=start, end_percent=end, vae=None)


def _sample(model: Any, pos: Any, neg: Any, latent: Any = None, **options: Any) -> torch.Tensor:
    settings = dict(seed=3, steps=4, cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    settings.update(options)
    latent = latent or EmptyLatentImage(width=32, height=32, batch_size=1)
    return S.KSampler(model=model, positive=pos, negative=neg, latent_image=latent, **settings)["samples"]


@contextmanager
def _count_calls(*controlnets: ControlNet) -> Iterator[list[int]]:
    counts = [0] * len(controlnets)
    handles = []
    for i, cn in enumerate(controlnets):
        with cn.slot.use((), 0) as net:
            handles.append(net.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1)))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def _residuals(model: Any, control: ControlNet, sigma: float = 3.0, batch: int = 1, size: int = 4) -> Any:
    ms = model_sampling(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * batch, 4, size, size, generator=g)
    s = torch.full((2 * batch,), sigma)
    context = torch.randn(2 * batch, 77, 32, generator=g)
    return control.residuals(x=x, timestep=ms.timestep(s), sigma=s, encoder_hidden_states=context,
                             added_cond_kwargs=None, percent_sigma=ms.percent_to_sigma, batch=batch)


def test_a_range_that_excludes_every_step_gives_exactly_the_result_without_it(runtime: Any, names: dict) -> None:
    model, _, _, pos, neg = _setup()
    first = C.ControlNetLoader(control_net_name=names["controlnet"])
    second = C.ControlNetLoader(control_net_name=names["second"])
    plain = _sample(model, pos, neg)
    # 4 "simple" steps sit at timesteps 999, 749, 499, 249; 0.55..0.6 is timesteps 449..400.
    for start, end in ((1.0, 1.0), (0.55, 0.6)):
        with _count_calls(first) as calls:
            assert torch.equal(_sample(model, *_apply(pos, neg, first, _image(1), 1.0, start, end)), plain)
        assert calls == [0]
    one = _sample(model, *_apply(pos, neg, first, _image(1)))
    assert not torch.equal(one, plain)
    stacked = _apply(*_apply(pos, neg, first, _image(1)), second, _image(2), 1.0, 0.55, 0.6)
    assert torch.equal(_sample(model, *stacked), one)


def test_stacked_controlnets_each_run_in_their_own_steps_and_add_up(runtime: Any, names: dict) -> None:
    model, _, _, pos, neg = _setup()
    first = C.ControlNetLoader(control_net_name=names["controlnet"])
    second = C.ControlNetLoader(control_net_name=names["second"])
    early = _apply(pos, neg, first, _image(1), 0.8, 0.0, 0.5)
    both = _apply(*early, second, _image(2), 0.6, 0.5, 1.0)
    assert both[0][0][1]["control"] is both[1][0][1]["control"]  # positive and negative batch into one call
    with _count_calls(first, second) as calls:
        out = _sample(model, *both)
    assert calls == [2, 2]  # cond and uncond in one call per step; steps 1-2 and 3-4
    assert not torch.equal(out, _sample(model, *early))
    # Where both apply, the residuals are the sum of each one's.
    whole_range = _apply(*_apply(pos, neg, first, _image(1), 0.8), second, _image(2), 0.6)[0][0][1]["control"]
    down, mid = _residuals(model, whole_range)
    down_a, mid_a = _residuals(model, whole_range.previous_controlnet)
    down_b, mid_b = whole_range.control(*_call_args(model))
    assert torch.allclose(mid, mid_a + mid_b) and all(torch.allclose(d, a + b) for d, a, b in zip(down, down_a, down_b))


def _call_args(model: Any) -> tuple[Any, ...]:
    ms = model_sampling(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 4, 4, generator=g)
    context = torch.randn(2, 77, 32, generator=g)
    return x, ms.timestep(torch.full((2,), 3.0)), context, None, 1


def test_step_nodes_switch_a_controlnet_on_and_off_between_steps(runtime: Any, names: dict) -> None:
    model, _, _, pos, neg = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    with_cn = _apply(pos, neg, cn, _image(1))
    latent = EmptyLatentImage(width=32, height=32, batch_size=1)
    state = S.SamplingStart(model=model, seed=3, steps=4, sampler_name="euler", scheduler="simple", latent_image=latent,
                            denoise=1.0)
    state = S.SamplingSteps(model=model, positive=with_cn[0], negative=with_cn[1], cfg=4.0, state=state, steps=2)
    state = S.SamplingSteps(model=model, positive=pos, negative=neg, cfg=4.0, state=state, steps=0)
    stepped, _ = S.SamplingResult(model=model, state=state)
    # end_percent 0.5 keeps the ControlNet for the first two of four "simple" steps.
    assert torch.equal(stepped["samples"], _sample(model, *_apply(pos, neg, cn, _image(1), 1.0, 0.0, 0.5)))


def test_strength_scales_every_residual_and_zero_strength_changes_nothing(runtime: Any, names: dict) -> None:
    model, _, _, pos, neg = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    full = _residuals(model, cn.applied(_image(1), 1.0))
    half = _residuals(model, cn.applied(_image(1), 0.5))
    assert torch.allclose(half[1], full[1] * 0.5, atol=1e-6)
    assert all(torch.allclose(h, f * 0.5, atol=1e-6) for h, f in zip(half[0], full[0]))
    assert _apply(pos, neg, cn, _image(1), 0.0) == (pos, neg)
    assert C.ControlNetApply(conditioning=pos, control_net=cn, image=_image(1), strength=0.0) is pos


def test_the_hint_is_centre_cropped_and_scaled_to_the_latent_as_comfyui_does(runtime: Any, names: dict) -> None:
    model, _, _, _, _ = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    wide = _image(5, height=24, width=40)  # 5:3 picture for a square 32x32 latent area
    cropped = wide[:, :, 8:32, :].movedim(-1, 1)
    expected = F.interpolate(cropped, size=(32, 32), mode="nearest-exact").movedim(1, -1)
    by_us = _residuals(model, cn.applied(wide, 1.0))
    by_hand = _residuals(model, cn.applied(expected, 1.0))
    assert torch.equal(by_us[1], by_hand[1]) and all(torch.equal(a, b) for a, b in zip(by_us[0], by_hand[0]))


def test_hint_batches_broadcast_per_conditioning() -> None:
    a, b, c = (torch.full((1, 3, 2, 2), float(v)) for v in (1, 2, 3))
    rows = lambda t: [int(v) for v in t[:, 0, 0, 0]]  # noqa: E731
    assert broadcast_hint(a, 6).shape[0] == 1  # one hint broadcasts
    assert rows(broadcast_hint(torch.cat([a, b]), 4, 2)) == [1, 2, 1, 2]
    assert rows(broadcast_hint(torch.cat([a, b, c]), 4, 2)) == [1, 2, 1, 2]
    assert rows(broadcast_hint(torch.cat([a, b]), 6, 3)) == [1, 2, 1, 1, 2, 1]
    assert rows(broadcast_hint(torch.cat([a, b]), 3)) == [1, 2, 1]


def test_each_latent_of_a_batch_gets_its_own_hint(runtime: Any, names: dict) -> None:
    model, _, _, pos, neg = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    latent = EmptyLatentImage(width=32, height=32, batch_size=2)
    same = _sample(model, *_apply(pos, neg, cn, torch.cat([_image(1), _image(1)])), latent, steps=2)
    pair = _sample(model, *_apply(pos, neg, cn, torch.cat([_image(1), _image(2)])), latent, steps=2)
    single = _sample(model, *_apply(pos, neg, cn, _image(1)), latent, steps=2)
    assert torch.allclose(pair[0], same[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(pair[1], same[1], rtol=1e-2, atol=1e-2)
    assert torch.allclose(single, same, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_controlnets_work_with_every_sampler(runtime: Any, names: dict, sampler: str) -> None:
    model, _, _, pos, neg = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    out = _sample(model, *_apply(pos, neg, cn, _image(1), 0.5, 0.0, 0.7), steps=2, sampler_name=sampler,
                  scheduler="karras")
    assert out.shape == (1, 4, 4, 4) and torch.isfinite(out).all()


def test_img2img_and_inpainting_with_a_controlnet(runtime: Any, names: dict) -> None:
    model, _, vae, pos, neg = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    controlled = _apply(pos, neg, cn, _image(1))
    latent = VAEEncode(pixels=_image(7), vae=vae)
    img2img = _sample(model, *controlled, latent, denoise=0.5)
    assert torch.isfinite(img2img).all() and not torch.equal(img2img, _sample(model, pos, neg, latent, denoise=0.5))
    mask = torch.zeros(1, 32, 32)
    mask[:, :, 16:] = 1.0
    inpainted = _sample(model, *controlled, SetLatentNoiseMask(samples=latent, mask=mask))
    assert torch.allclose(inpainted[..., :2], latent["samples"][..., :2], atol=1e-5)  # the kept half stays
    assert not torch.allclose(inpainted[..., 2:], latent["samples"][..., 2:], atol=1e-2)
    # An inpainting model's extra input channels do not reach the ControlNet.
    imodel, _, ivae, ipos, ineg = _setup("tiny-inpaint.safetensors")
    ipos, ineg, ilatent = InpaintModelConditioning(positive=ipos, negative=ineg, vae=ivae, pixels=_image(7), mask=mask,
                                                   noise_mask=True)
    with _count_calls(cn) as calls:
        out = _sample(imodel, *_apply(ipos, ineg, cn, _image(1)), ilatent, steps=2)
    assert calls == [2] and torch.isfinite(out).all()


def test_sdxl_controlnets_on_sdxl_and_clear_errors_across_families(runtime: Any, names: dict) -> None:
    model, _, _, pos, neg = _setup("tiny-sdxl.safetensors")
    xl = C.ControlNetLoader(control_net_name=names["sdxl"])
    assert xl.family == "sdxl"
    out = _sample(model, *_apply(pos, neg, xl, _image(1)), steps=2)
    assert torch.isfinite(out).all() and not torch.equal(out, _sample(model, pos, neg, steps=2))
    sd1 = C.ControlNetLoader(control_net_name=names["controlnet"])
    with pytest.raises(ValueError, match="text embeddings 32 wide.*96"):
        _sample(model, *_apply(pos, neg, sd1, _image(1)), steps=1)
    sd1_model, _, _, sd1_pos, sd1_neg = _setup()
    with pytest.raises(ValueError, match="ControlNet"):
        _sample(sd1_model, *_apply(sd1_pos, sd1_neg, xl, _image(1)), steps=1)


def test_bad_control_images_give_clear_errors(runtime: Any, registry: Any, names: dict) -> None:
    _, _, _, pos, neg = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    with pytest.raises(ControlImageError, match="MASK"):
        _apply(pos, neg, cn, torch.rand(1, 32, 32))
    with pytest.raises(ControlImageError, match="2 channels"):
        _apply(pos, neg, cn, torch.rand(1, 32, 32, 2))
    with pytest.raises(ControlImageError, match="no pixels"):
        _apply(pos, neg, cn, torch.rand(1, 0, 32, 3))
    with pytest.raises(ValueError, match="start_percent"):
        _apply(pos, neg, cn, _image(1), 1.0, 0.8, 0.2)
    rgba = torch.cat([_image(1), torch.ones(1, 32, 32, 1)], dim=-1)
    hint = _apply(pos, neg, cn, rgba)[0][0][1]["control"].cond_hint_original
    assert hint.shape == (1, 3, 32, 32)
    # A MASK output linked where the IMAGE belongs is a validation error of the apply node.
    prompt = txt2img(size=32)
    prompt["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": names["controlnet"]}}
    prompt["21"] = {"class_type": "LoadImage", "inputs": {"image": "missing.png"}}
    prompt["22"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0], "image": ["21", 1], "strength": 1.0,
        "start_percent": 0.0, "end_percent": 1.0}}
    prompt["3"]["inputs"].update(positive=["22", 0], negative=["22", 1])
    errors = validate_prompt(prompt, registry).node_errors.get("22", [])
    assert any(e.type == "return_type_mismatch" and "'image' expects IMAGE" in e.details for e in errors), errors


def test_the_old_apply_node_also_drives_a_negative_without_controlnet(runtime: Any, names: dict) -> None:
    _, _, _, pos, neg = _setup()
    cn = C.ControlNetLoader(control_net_name=names["controlnet"])
    applied = C.ControlNetApply(conditioning=pos, control_net=cn, image=_image(1), strength=0.9)
    control = applied[0][1]["control"]
    assert applied[0][1]["control_apply_to_uncond"] and control.strength == 0.9 and "control" not in pos[0][1]
    negative = apply_control_to_uncond(applied, neg)
    assert negative is not None and negative[0][1]["control"] is control and "control" not in neg[0][1]
    advanced_neg = _apply(pos, neg, cn, _image(2))[1]
    assert apply_control_to_uncond(applied, advanced_neg) is advanced_neg  # a negative with its own ControlNet


def test_loading_shares_the_module_and_copies_are_independent(runtime: Any, names: dict) -> None:
    model, _, _, pos, neg = _setup()
    a = C.ControlNetLoader(control_net_name=names["controlnet"])
    b = C.ControlNetLoader(control_net_name=names["controlnet"])
    assert a.slot is b.slot and a is not b
    applied = _apply(pos, neg, a, _image(1), 0.3)[0][0][1]["control"]
    assert a.cond_hint_original is None and applied.slot is a.slot and applied.strength == 0.3
    # The output cache counts hint images, not the shared weights.
    assert a.cache_nbytes() == 0 and applied.cache_nbytes() == 32 * 32 * 3 * 4
    assert estimate_nbytes([[torch.zeros(1), {"control": applied}]]) == 4 + applied.cache_nbytes()
    diff_loaded = C.DiffControlNetLoader(model=model, control_net_name=names["controlnet"])
    assert diff_loaded.family == "sd1" and diff_loaded.slot is not a.slot  # a plain file loads as it is


def test_node_schemas_keep_comfyui_inputs(registry: Any) -> None:
    schema = registry["ControlNetApplyAdvanced"].schema
    assert list(schema.inputs) == ["positive", "negative", "control_net", "image", "strength", "start_percent",
                                   "end_percent", "vae"]
    assert schema.inputs["vae"].optional and [o.name for o in schema.outputs] == ["positive", "negative"]
    strength = schema.inputs["strength"].options
    assert (strength["default"], strength["min"], strength["max"], strength["step"]) == (1.0, 0.0, 10.0, 0.01)
    assert schema.inputs["end_percent"].options["default"] == 1.0 and schema.inputs["start_percent"].options["step"] == 0.001
    assert list(registry["ControlNetApply"].schema.inputs) == ["conditioning", "control_net", "image", "strength"]
    assert registry["ControlNetApply"].schema.deprecated
    assert list(registry["ControlNetLoader"].schema.inputs) == ["control_net_name"]
    assert list(registry["DiffControlNetLoader"].schema.inputs) == ["model", "control_net_name"]
    canny = registry["Canny"].schema.inputs
    assert (canny["low_threshold"].options["default"], canny["high_threshold"].options["default"]) == (0.4, 0.8)


def test_a_diffusers_controlnet_folder_in_the_controlnet_folder_loads(runtime: Any, names: dict) -> None:
    folder = Path(runtime.folders.models_dir) / "controlnet" / "tiny-controlnet-folder"
    if not (folder / "config.json").is_file():
        write_tiny_controlnet(folder, "sd1", seed=2, layout="folder")
    runtime.folders.invalidate()
    name = "tiny-controlnet-folder/diffusion_pytorch_model.safetensors"
    assert name in runtime.folders.get_filename_list("controlnet")
    cn = C.ControlNetLoader(control_net_name=name)
    assert (cn.layout, cn.family) == ("diffusers", "sd1")
