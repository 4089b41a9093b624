"""tokenize: ids and weights by hand with the real CLIP vocabulary, chunking of long prompts."""
from __future__ import annotations

import pytest
import torch

from nodes.models.tiny import tiny_sd1, tiny_sdxl
from nodes.models.wrappers import wrap_checkpoint
from nodes.text import Tokens, tokenize

START, END = 49406, 49407
CAT, PHOTO, OF, A = 2368, 1125, 539, 320


@pytest.fixture(scope="module")
def clip():
    return wrap_checkpoint(tiny_sd1(0)).clip


@pytest.fixture(scope="module")
def xl_clip():
    return wrap_checkpoint(tiny_sdxl(0)).clip


def padded(ids: list[int], pad: int = END) -> list[int]:
    return [START, *ids, END] + [pad] * (75 - len(ids))


def test_plain_prompt(clip) -> None:
    tokens = tokenize(clip, "a photo of a cat")
    (enc,) = tokens.encoders
    assert enc.name == "clip_l" and enc.ids.shape == (1, 77) and enc.ids.dtype == torch.long
    assert enc.ids[0].tolist() == padded([A, PHOTO, OF, A, CAT])
    assert enc.weights.tolist() == [[1.0] * 77] and not enc.weighted
    assert enc.empty_ids.tolist() == padded([])
    assert tokenize(clip, "").encoders[0].ids[0].tolist() == padded([])
    # spaces and newlines only separate words
    assert tokenize(clip, "  a\nphoto   of a  cat ").encoders[0].ids[0].tolist() == enc.ids[0].tolist()


def test_weights_nesting_and_escapes(clip) -> None:
    enc = tokenize(clip, "masterpiece, best quality, (red hair:1.2), 1girl").encoders[0]
    assert enc.ids[0, :12].tolist() == [START, 12066, 267, 949, 3027, 267, 736, 2225, 267, 272, 1611, END]
    assert enc.weights[0, :12].tolist() == pytest.approx([1, 1, 1, 1, 1, 1, 1.2, 1.2, 1, 1, 1, 1])
    enc = tokenize(clip, "a ((cat)) (photo)").encoders[0]
    assert enc.ids[0, :5].tolist() == [START, A, CAT, PHOTO, END]
    assert enc.weights[0, :5].tolist() == pytest.approx([1, 1, 1.21, 1.1, 1])
    assert enc.weighted
    escaped = tokenize(clip, r"a \(cat\)").encoders[0]
    assert escaped.ids[0, :6].tolist() == [START, A, 263, CAT, 264, END]  # "(" and ")" are tokens
    assert escaped.weights[0].tolist() == [1.0] * 77
    grouped = tokenize(clip, "a (cat)").encoders[0]
    assert grouped.ids[0, :4].tolist() == [START, A, CAT, END]


def test_long_prompts_are_chunked_by_75(clip) -> None:
    enc = tokenize(clip, "cat " * 80).encoders[0]
    assert enc.ids.shape == (2, 77)
    assert enc.ids[0].tolist() == [START] + [CAT] * 75 + [END]
    assert enc.ids[1].tolist() == padded([CAT] * 5)
    assert tokenize(clip, "cat " * 75).encoders[0].chunks == 1
    assert tokenize(clip, "cat " * 76).encoders[0].chunks == 2


def test_short_words_move_to_the_next_chunk_long_ones_split(clip) -> None:
    seven = [80, 89, 87, 85, 80, 89, 17768]  # "qzxvqzxv"
    enc = tokenize(clip, "cat " * 70 + "qzxvqzxv").encoders[0]
    assert enc.ids[0].tolist() == padded([CAT] * 70)
    assert enc.ids[1].tolist() == padded(seven)
    eleven = [80, 89, 87, 85, 80, 89, 87, 85, 80, 89, 17768]  # "qzxvqzxvqzxv"
    enc = tokenize(clip, "cat " * 70 + "(qzxvqzxvqzxv:1.5)").encoders[0]
    assert enc.ids[0].tolist() == [START] + [CAT] * 70 + eleven[:5] + [END]
    assert enc.ids[1].tolist() == padded(eleven[5:])
    assert enc.weights[0, 71:76].tolist() == [1.5] * 5 and enc.weights[1, 1:7].tolist() == [1.5] * 6
    assert enc.weights[0, 76] == 1.0 and enc.weights[1, 7] == 1.0  # end tokens keep weight 1


def test_sdxl_tokenizes_for_both_encoders_with_their_padding(xl_clip) -> None:
    tokens = tokenize(xl_clip, "a (cat:0.5)")
    l, g = tokens.encoders
    assert (l.name, g.name) == ("clip_l", "clip_g")
    assert l.ids[0].tolist() == padded([A, CAT]) and g.ids[0].tolist() == padded([A, CAT], pad=0)
    assert g.empty_ids.tolist() == padded([], pad=0)
    assert l.weights[0, 2] == 0.5 and g.weights[0, 2] == 0.5
    assert tokens["clip_g"] is g
    with pytest.raises(KeyError, match="no tokens for encoder 'clip_h'"):
        tokens["clip_h"]


def test_comfyui_token_dicts_round_trip(xl_clip) -> None:
    tokens = tokenize(xl_clip, "a (cat:1.3) " + "photo " * 80)
    comfy = tokens.to_comfy()
    assert set(comfy) == {"l", "g"} and len(comfy["l"]) == 2 and len(comfy["l"][0]) == 77
    assert comfy["l"][0][:3] == [(START, 1.0), (A, 1.0), (CAT, pytest.approx(1.3))]
    back = Tokens.from_comfy(comfy, xl_clip)
    for ours, theirs in zip(tokens.encoders, back.encoders):
        assert torch.equal(ours.ids, theirs.ids) and torch.equal(ours.weights, theirs.weights)
        assert torch.equal(ours.empty_ids, theirs.empty_ids)
    triples = tokens.to_comfy(word_ids=True)
    assert triples["g"][0][:3] == [(START, 1.0, 0), (A, 1.0, 1), (CAT, pytest.approx(1.3), 2)]
    again = Tokens.from_comfy(triples, xl_clip).encoders[0]
    assert torch.equal(again.ids, tokens.encoders[0].ids) and torch.equal(again.word_ids, tokens.encoders[0].word_ids)
    with pytest.raises(KeyError, match="no 'g' entry"):
        Tokens.from_comfy({"l": comfy["l"]}, xl_clip)
