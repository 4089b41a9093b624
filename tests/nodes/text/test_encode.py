"""encode: parity with diffusers' encode_prompt, ComfyUI's weighting formula, clip skip, SDXL, chunks."""
from __future__ import annotations

import logging

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

from nodes.device import compute_device
from nodes.models.tiny import tiny_sd1, tiny_sd2, tiny_sdxl
from nodes.models.wrappers import wrap_checkpoint
from nodes.text import conditioning, encode, encode_text, tokenize

PROMPT = "a photo of a cat, highly detailed"


@pytest.fixture(scope="module")
def sd1():
    parts = tiny_sd1(0)
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoders[0], tokenizer=parts.tokenizers[0],
                                   unet=parts.unet, scheduler=EulerDiscreteScheduler.from_config(parts.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return wrap_checkpoint(parts), pipe


@pytest.fixture(scope="module")
def sdxl():
    parts = tiny_sdxl(0)
    pipe = StableDiffusionXLPipeline(vae=parts.vae, text_encoder=parts.text_encoders[0],
                                     text_encoder_2=parts.text_encoders[1], tokenizer=parts.tokenizers[0],
                                     tokenizer_2=parts.tokenizers[1], unet=parts.unet,
                                     scheduler=EulerDiscreteScheduler.from_config(parts.scheduler_config))
    return wrap_checkpoint(parts), pipe


def test_sd1_matches_diffusers_encode_prompt(sd1) -> None:
    (model, clip, _), pipe = sd1
    cond, pooled = encode_text(clip, PROMPT)
    with torch.no_grad():
        expected, _ = pipe.encode_prompt(PROMPT, compute_device(), 1, False)
    assert cond.shape == (1, 77, 32) and cond.dtype == torch.float32
    assert torch.allclose(cond, expected, atol=1e-6)
    te = clip.slot.module[0]
    with torch.no_grad():
        ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
        assert torch.allclose(pooled, te(ids).pooler_output, atol=1e-6)


def test_sd1_clip_skip_matches_diffusers(sd1) -> None:
    (_, clip, _), pipe = sd1
    cond, _ = encode_text(clip.with_layer_idx(-2), PROMPT)
    # diffusers' clip_skip=1 recipe, spelled out: its encode_prompt reaches for `text_encoder.text_model`,
    # which transformers 5 flattened away, so it cannot run it itself
    te = pipe.text_encoder
    with torch.no_grad():
        ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        hidden = te(ids, output_hidden_states=True).hidden_states[-(1 + 1)]
        expected = te.final_layer_norm(hidden)
        last, _ = pipe.encode_prompt(PROMPT, compute_device(), 1, False)
    assert torch.allclose(cond, expected, atol=1e-6) and not torch.allclose(cond, last, atol=1e-3)
    # -1 is the default for SD1
    assert torch.allclose(encode_text(clip.with_layer_idx(-1), PROMPT)[0], last, atol=1e-6)


def test_out_of_range_layer_uses_the_last(sd1, caplog: pytest.LogCaptureFixture) -> None:
    (_, clip, _), _ = sd1
    with caplog.at_level(logging.WARNING, logger="nodes.text.roles"):
        cond, _ = encode_text(clip.with_layer_idx(-24), PROMPT)
    assert "outside -1..-2" in caplog.text
    assert torch.allclose(cond, encode_text(clip, PROMPT)[0], atol=1e-6)


def test_sdxl_matches_diffusers_encode_prompt(sdxl) -> None:
    (_, clip, _), pipe = sdxl
    cond, pooled = encode_text(clip, PROMPT)
    with torch.no_grad():
        expected, _, expected_pooled, _ = pipe.encode_prompt(PROMPT, device=compute_device(),
                                                             do_classifier_free_guidance=False)
    l_width, g_width = (e.hidden_size for e in clip.encoders)
    g_proj = clip.slot.module[1].config.projection_dim
    assert cond.shape == (1, 77, l_width + g_width) and pooled.shape == (1, g_proj)  # features concatenated, G pools
    assert torch.allclose(cond, expected, atol=1e-6)
    assert torch.allclose(pooled, expected_pooled, atol=1e-6)


def manual_weighted(te, ids: torch.Tensor, empty: torch.Tensor, weights: torch.Tensor, layer: int | None,
                    norm: bool) -> torch.Tensor:
    """z = (z - z_empty) * w + z_empty, written out position by position."""
    with torch.no_grad():
        out = te(torch.stack([ids, empty]), output_hidden_states=True)
        core = te.text_model if hasattr(te, "text_model") else te
        h = out.last_hidden_state if layer is None else out.hidden_states[layer]
        if layer is not None and norm:
            h = core.final_layer_norm(h)
    z, z_empty = h[0].clone(), h[1]
    for j in range(77):
        w = float(weights[j])
        if w != 1.0:
            z[j] = (z[j] - z_empty[j]) * w + z_empty[j]
    return z


def test_weighting_formula_against_the_empty_prompt(sd1) -> None:
    (_, clip, _), _ = sd1
    tokens = tokenize(clip, "a (photo:1.5) of a ((cat)), (dark:0.3)")
    enc = tokens.encoders[0]
    cond, _ = encode(clip, tokens)
    expected = manual_weighted(clip.slot.module[0], enc.ids[0], enc.empty_ids, enc.weights[0], None, True)
    assert torch.allclose(cond[0], expected, atol=1e-5)
    # positions of weight 1 are the plain encoding of the same ids
    plain, _ = encode_text(clip, "a photo of a cat, dark")
    unweighted = (enc.weights[0] == 1.0)
    assert torch.allclose(cond[0][unweighted], plain[0][unweighted], atol=1e-5)
    assert not torch.allclose(cond[0][~unweighted], plain[0][~unweighted], atol=1e-3)


def test_sdxl_weighting_on_both_encoders(sdxl) -> None:
    (_, clip, _), _ = sdxl
    tokens = tokenize(clip, "a (cat:1.4)")
    cond, pooled = encode(clip, tokens)
    parts = [manual_weighted(te, enc.ids[0], enc.empty_ids, enc.weights[0], -2, False)
             for te, enc in zip(clip.slot.module, tokens.encoders)]
    assert torch.allclose(cond[0], torch.cat(parts, dim=-1), atol=1e-5)
    # weights never touch the pooled output
    assert torch.allclose(pooled, encode_text(clip, "a cat")[1], atol=1e-6)


def test_long_prompt_concatenates_chunks_and_pools_the_first(sd1) -> None:
    (_, clip, _), _ = sd1
    text = "cat " * 75 + "dog " * 10
    tokens = tokenize(clip, text)
    cond, pooled = encode(clip, tokens)
    assert cond.shape == (1, 154, 32)
    te = clip.slot.module[0]
    with torch.no_grad():
        out = te(tokens.encoders[0].ids)
    assert torch.allclose(cond[0, :77], out.last_hidden_state[0], atol=1e-5)
    assert torch.allclose(cond[0, 77:], out.last_hidden_state[1], atol=1e-5)
    assert torch.allclose(pooled, out.pooler_output[0:1], atol=1e-5)


def test_conditioning_format_and_compat_methods(sd1) -> None:
    (_, clip, _), _ = sd1
    cond, pooled = encode_text(clip, PROMPT)
    value = conditioning(cond, pooled)
    assert isinstance(value, list) and len(value) == 1 and value[0][0] is cond
    assert value[0][1] == {"pooled_output": pooled}
    # ComfyUI's CLIP methods, as plugins call them
    comfy_tokens = clip.tokenize(PROMPT)
    assert set(comfy_tokens) == {"l"} and comfy_tokens["l"][0][0] == (49406, 1.0)
    assert torch.allclose(clip.encode_from_tokens(comfy_tokens), cond)
    c2, p2 = clip.encode_from_tokens(tokenize(clip, PROMPT), return_pooled=True)
    assert torch.allclose(c2, cond) and torch.allclose(p2, pooled)
    as_dict = clip.encode_from_tokens(comfy_tokens, return_dict=True)
    assert torch.allclose(as_dict["cond"], cond) and torch.allclose(as_dict["pooled_output"], pooled)
    scheduled = clip.encode_from_tokens_scheduled(comfy_tokens, add_dict={"strength": 0.5})
    assert len(scheduled) == 1 and torch.allclose(scheduled[0][0], cond)
    assert torch.allclose(scheduled[0][1]["pooled_output"], pooled) and scheduled[0][1]["strength"] == 0.5
    words = clip.tokenize("a photo, cat", return_word_ids=True)["l"][0]
    assert words[:6] == [(49406, 1.0, 0), (320, 1.0, 1), (1125, 1.0, 2), (267, 1.0, 2), (2368, 1.0, 3), (49407, 1.0, 0)]


def test_sd2_pooled_output_is_projected_and_penultimate_layer_is_default() -> None:
    parts = tiny_sd2(0)
    clip = wrap_checkpoint(parts).clip
    te = parts.text_encoders[0]
    cond, pooled = encode_text(clip, PROMPT)
    ids = tokenize(clip, PROMPT).encoders[0].ids
    with torch.no_grad():
        out = te(ids, output_hidden_states=True)
        expected = te.final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(cond[0], expected[0], atol=1e-6)
    projection = parts.extra["text_projections"]["clip_h"]
    assert torch.allclose(pooled, out.pooler_output @ projection.T, atol=1e-6)


def test_tokens_must_come_from_a_matching_clip(sd1, sdxl) -> None:
    (_, clip, _), _ = sd1
    (_, xl_clip, _), _ = sdxl
    with pytest.raises(ValueError, match=r"tokens are for encoders \['clip_l'\], this CLIP has \['clip_l', 'clip_g'\]"):
        encode(xl_clip, tokenize(clip, "a cat"))
