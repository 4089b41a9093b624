"""The text stages: prompt -> TOKENS (tokenize) -> cond + pooled (encode) -> CONDITIONING."""
from __future__ import annotations

from nodes.text.encode import apply_weights, conditioning, encode, encode_text
from nodes.text.roles import EncoderRole, encoder_roles
from nodes.text.tokens import CHUNK_LENGTH, EncoderTokens, Tokens, tokenize
from nodes.text.weighting import parse_weights

__all__ = ["CHUNK_LENGTH", "EncoderRole", "EncoderTokens", "Tokens", "apply_weights", "conditioning", "encode",
           "encode_text", "encoder_roles", "parse_weights", "tokenize"]
