"""tokenize: prompt text -> TOKENS (per text encoder, 77-token chunks with per-token weights).

Words are tokenized one by one (ComfyUI does the same), so weighting never changes how a word
splits. Each chunk holds up to 75 prompt tokens between the start and end tokens and is padded to
77 with the tokenizer's pad token. A word shorter than 8 tokens never straddles two chunks; it
moves to the next one. `embedding:name` puts a textual inversion's vectors in place of tokens.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import torch

from nodes.text.embeddings import EMBEDDING_PREFIX, embedding_vectors, find_embedding, load_embedding_file
from nodes.text.roles import COMFY_KEYS, encoder_roles
from nodes.text.weighting import parse_weights

if TYPE_CHECKING:
    from nodes.models.wrappers import ClipWrapper, EncoderInfo

__all__ = ["Tokens", "EncoderTokens", "tokenize", "CHUNK_LENGTH", "MAX_WORD_LENGTH"]

log = logging.getLogger(__name__)

CHUNK_LENGTH = 77
_CONTENT = CHUNK_LENGTH - 2
MAX_WORD_LENGTH = 8  # words this long (in tokens) may be split across chunks
Token = Union[int, torch.Tensor]


@dataclass(frozen=True, eq=False)
class EncoderTokens:
    """One encoder's tokens: ids and weights [k, 77], embedding vectors by (chunk, position), the empty prompt.

    `word_ids` [k, 77] numbers the prompt's words from 1 (0 for start, end and padding), as
    ComfyUI's `return_word_ids` does.
    """

    name: str
    ids: torch.Tensor
    weights: torch.Tensor
    empty_ids: torch.Tensor
    embeds: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    word_ids: torch.Tensor | None = None

    @property
    def chunks(self) -> int:
        return int(self.ids.shape[0])

    @property
    def weighted(self) -> bool:
        return bool((self.weights != 1.0).any())

    def pairs(self, word_ids: bool = False) -> list[list[tuple[Any, ...]]]:
        """ComfyUI's form: per chunk, (token id or embedding vector, weight[, word id]) tuples."""
        words = self.word_ids if self.word_ids is not None else torch.zeros_like(self.ids)
        return [[(self.embeds.get((c, i), int(self.ids[c, i])), float(self.weights[c, i]))
                 + ((int(words[c, i]),) if word_ids else ())
                 for i in range(self.ids.shape[1])] for c in range(self.chunks)]


@dataclass(frozen=True, eq=False)
class Tokens:
    """TOKENS: what tokenize gives encode, one EncoderTokens per text encoder of the CLIP."""

    encoders: tuple[EncoderTokens, ...]
    text: str = ""

    def __getitem__(self, name: str) -> EncoderTokens:
        for enc in self.encoders:
            if enc.name == name:
                return enc
        raise KeyError(f"no tokens for encoder {name!r}; have {[e.name for e in self.encoders]}")

    def to_comfy(self, word_ids: bool = False) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's token dict (`{"l": [[(id, weight), ...], ...], "g": ...}`) for plugin code."""
        return {COMFY_KEYS.get(e.name, e.name): e.pairs(word_ids) for e in self.encoders}

    @classmethod
    def from_comfy(cls, data: Mapping[str, Sequence[Sequence[Sequence[Any]]]], clip: ClipWrapper) -> Tokens:
        """Tokens from ComfyUI's token dict (pairs or (token, weight, word) triples)."""
        encs = []
        for role, tokenizer in zip(encoder_roles(clip), clip.tokenizers):
            key = COMFY_KEYS.get(role.name, role.name)
            if key not in data:
                raise KeyError(f"ComfyUI tokens have no {key!r} entry for encoder {role.name}; keys: {sorted(data)}")
            chunks = [[(entry[0], float(entry[1]), int(entry[2]) if len(entry) > 2 else 0) for entry in chunk]
                      for chunk in data[key]]
            encs.append(_build(role.name, chunks, _specials(tokenizer)))
        return cls(tuple(encs))


@dataclass(frozen=True)
class _Specials:
    start: int
    end: int
    pad: int


def _specials(tokenizer: Any) -> _Specials:
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    return _Specials(int(start), int(end), int(pad))


Entry = tuple[Token, float, int]  # token id or embedding vector, weight, word number (0: not a word)


def _build(name: str, chunks: list[list[Entry]], sp: _Specials) -> EncoderTokens:
    ids = torch.empty(len(chunks), CHUNK_LENGTH, dtype=torch.long)
    weights = torch.ones(len(chunks), CHUNK_LENGTH, dtype=torch.float32)
    words = torch.zeros(len(chunks), CHUNK_LENGTH, dtype=torch.long)
    embeds: dict[tuple[int, int], torch.Tensor] = {}
    for c, chunk in enumerate(chunks):
        if len(chunk) != CHUNK_LENGTH:
            raise ValueError(f"tokens for {name}: chunk {c} has {len(chunk)} entries, must have {CHUNK_LENGTH}")
        for i, (tok, w, word) in enumerate(chunk):
            if isinstance(tok, torch.Tensor):
                embeds[(c, i)] = tok.detach().float().reshape(-1)
                ids[c, i] = 0  # placeholder id; its embedding row is replaced at encode time
            else:
                ids[c, i] = int(tok)
            weights[c, i] = w
            words[c, i] = word
    empty = torch.tensor([sp.start, sp.end] + [sp.pad] * (CHUNK_LENGTH - 2), dtype=torch.long)
    return EncoderTokens(name, ids, weights, empty, embeds, words)


def _chunk(groups: list[list[tuple[Token, float]]], sp: _Specials) -> list[list[Entry]]:
    """Pack word groups into chunks of at most 75 tokens, then frame and pad them to 77."""
    chunks: list[list[Entry]] = []
    current: list[Entry] = []
    for number, pairs in enumerate(groups, start=1):
        group: list[Entry] = [(tok, w, number) for tok, w in pairs]
        splittable = len(group) >= MAX_WORD_LENGTH
        while group:
            room = _CONTENT - len(current)
            if len(group) <= room:
                current.extend(group)
                group = []
            elif splittable:
                current.extend(group[:room])
                group = group[room:]
                chunks.append(current)
                current = []
            else:
                chunks.append(current)
                current = []
    chunks.append(current)
    return [[(sp.start, 1.0, 0), *c, (sp.end, 1.0, 0)] + [(sp.pad, 1.0, 0)] * (_CONTENT - len(c)) for c in chunks]


def _word_groups(clip: ClipWrapper, tokenizer: Any, encoder: str, info: EncoderInfo,
                 segments: list[tuple[str, float]]) -> list[list[tuple[Token, float]]]:
    groups: list[list[tuple[Token, float]]] = []
    for text, weight in segments:
        for word in text.replace("\n", " ").split(" "):
            if not word:
                continue
            if word.startswith(EMBEDDING_PREFIX) and clip.embedding_lookup is not None:
                name = word[len(EMBEDDING_PREFIX):]
                vectors, word = _embedding(clip, name, encoder, info)
                if vectors is not None:
                    groups.append([(v, weight) for v in vectors])
                if not word:
                    continue
            ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            if ids:
                groups.append([(int(t), weight) for t in ids])
    return groups


def _embedding(clip: ClipWrapper, name: str, encoder: str, info: EncoderInfo) -> tuple[torch.Tensor | None, str]:
    assert clip.embedding_lookup is not None
    path, leftover = find_embedding(clip.embedding_lookup, name)
    if path is None:
        log.warning("embedding %r not found in the embeddings folders; ignored", name)
        return None, leftover
    try:
        data = load_embedding_file(path)
    except Exception as exc:  # noqa: BLE001 - a bad file in the folder must not fail every prompt
        log.warning("embedding %r (%s) cannot be read: %s; ignored", name, path, exc)
        return None, leftover
    vectors = embedding_vectors(data, encoder)
    if vectors is None:
        log.warning("embedding %r (%s) has no vectors for %s; ignored", name, path, encoder)
    elif vectors.shape[-1] != info.hidden_size:
        log.warning("embedding %r (%s) has vectors of size %d, %s needs %d; ignored",
                    name, path, vectors.shape[-1], encoder, info.hidden_size)
        vectors = None
    return vectors, leftover


def tokenize(clip: ClipWrapper, text: str) -> Tokens:
    """TOKENS for `text`: ComfyUI's weighting syntax, embeddings, 77-token chunks, per encoder."""
    segments = parse_weights(text)
    encs = []
    for role, tokenizer, info in zip(encoder_roles(clip), clip.tokenizers, clip.encoders):
        sp = _specials(tokenizer)
        chunks = _chunk(_word_groups(clip, tokenizer, role.name, info, segments), sp)
        encs.append(_build(role.name, chunks, sp))
    return Tokens(tuple(encs), text)
