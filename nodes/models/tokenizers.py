"""CLIP tokenizers built from the BPE vocabulary that ships with diffloom (no download, no hub).

SD1's CLIP-L and the OpenCLIP encoders of SD2 and SDXL share one vocabulary (49,408 tokens); they
differ in the padding token: SD1 pads with `<|endoftext|>`, OpenCLIP pads with `!` (id 0). As in
OpenCLIP's own tokenizer, a `!` in the text still tokenises as ordinary text (`!!` is one token, 748):
the pad token is set after construction so that it is not registered as an added token, which
transformers would cut out of the text.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

VOCAB_DIR = Path(__file__).parent / "configs" / "clip_tokenizer"
MAX_LENGTH = 77
# Every name a caller may use for a text encoder, to the tokenizer kind it needs.
_KINDS = {"clip_l": "clip_l", "sd1": "clip_l", "open_clip": "open_clip", "clip_h": "open_clip",
          "clip_g": "open_clip", "sd2": "open_clip", "sdxl": "open_clip"}
_PAD = {"clip_l": "<|endoftext|>", "open_clip": "!"}


def tokenizer_kind(kind: str) -> str:
    """'clip_l' or 'open_clip' for any accepted name of a text encoder (role or family)."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"tokenizer kind {kind!r} is not one of {sorted(_KINDS)}") from None


@functools.cache
def _vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = json.loads((VOCAB_DIR / "vocab.json").read_text(encoding="utf-8"))
    lines = (VOCAB_DIR / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:] if line]
    return vocab, merges  # type: ignore[return-value]


def clip_tokenizer(kind: str) -> CLIPTokenizer:
    """The shared CLIPTokenizer for `kind` (clip_l / open_clip, or a role or family name).

    Cached: every caller gets the same object. Copy it (`copy.deepcopy`) before adding tokens.
    """
    return _build(tokenizer_kind(kind))


@functools.cache
def _build(kind: str) -> CLIPTokenizer:
    from transformers import CLIPTokenizer  # noqa: PLC0415 - transformers is slow to import

    vocab, merges = _vocabulary()
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=MAX_LENGTH)
    tokenizer.pad_token = _PAD[kind]
    return tokenizer


def tokenizer_for_role(role: str) -> CLIPTokenizer:
    """The tokenizer a text encoder of `role` (clip_l, clip_h, clip_g) uses."""
    return clip_tokenizer(tokenizer_kind(role))
