"""The shipped CLIP vocabulary gives CLIP's own token ids, with each family's padding."""
from __future__ import annotations

import pytest

from nodes.models.tokenizers import clip_tokenizer, tokenizer_for_role

# Token ids of CLIP's reference tokenizer (environment.md, section 2a).
REFERENCE_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "A Photo Of A CAT!!": [49406, 320, 1125, 539, 320, 2368, 748, 49407],
    "masterpiece, best quality, (red hair:1.2), 1girl":
        [49406, 12066, 267, 949, 3027, 267, 263, 736, 2225, 281, 272, 269, 273, 2361, 272, 1611, 49407],
}


@pytest.mark.parametrize("kind", ["clip_l", "open_clip"])
@pytest.mark.parametrize("prompt", sorted(REFERENCE_IDS))
def test_ids_match_clip_reference(kind: str, prompt: str) -> None:
    assert clip_tokenizer(kind)(prompt).input_ids == REFERENCE_IDS[prompt]


def test_vocabulary_and_special_tokens() -> None:
    tok = clip_tokenizer("clip_l")
    assert len(tok) == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407
    assert tok.model_max_length == 77
    assert tok.convert_ids_to_tokens([0, 256, 49406, 49407]) == ["!", "!</w>", "<|startoftext|>", "<|endoftext|>"]


def test_sd1_pads_with_end_of_text() -> None:
    ids = clip_tokenizer("clip_l")("a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    assert ids[:4] == [49406, 320, 2368, 49407]
    assert set(ids[4:]) == {49407}


def test_open_clip_pads_with_exclamation_mark_id_0() -> None:
    tok = clip_tokenizer("open_clip")
    assert tok.pad_token == "!" and tok.pad_token_id == 0
    ids = tok("a cat", padding="max_length", max_length=77).input_ids
    assert ids[:4] == [49406, 320, 2368, 49407]
    assert set(ids[4:]) == {0}


def test_long_prompt_truncates_to_77_with_end_token() -> None:
    ids = clip_tokenizer("clip_l")("cat " * 100, truncation=True, max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_cached_and_aliases_share_one_object() -> None:
    assert clip_tokenizer("clip_l") is clip_tokenizer("sd1") is tokenizer_for_role("clip_l")
    assert clip_tokenizer("open_clip") is clip_tokenizer("clip_g") is tokenizer_for_role("clip_h")
    assert clip_tokenizer("clip_l") is not clip_tokenizer("open_clip")


def test_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="'t5'"):
        clip_tokenizer("t5")
