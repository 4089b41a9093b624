"""encode: TOKENS -> (cond [1, 77*k, dim], pooled), and the CONDITIONING list built from them.

All chunks (plus the empty prompt when any weight differs from 1) go through the encoder in one
batch. Weights act as ComfyUI applies them: z = (z - z_empty) * w + z_empty per position, against
the encoding of the empty prompt. Chunks are concatenated along the sequence; the pooled output is
the first chunk's, from the last encoder (G for SDXL). SDXL's encoders are concatenated on the
feature axis (768 + 1280 = 2048).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nodes import device as devices
from nodes.text.roles import EncoderRole, encoder_roles, resolve_layer
from nodes.text.tokens import EncoderTokens, Tokens, tokenize

if TYPE_CHECKING:
    from nodes.models.wrappers import ClipWrapper, EncoderInfo

__all__ = ["encode", "encode_text", "conditioning", "apply_weights"]


def apply_weights(z: torch.Tensor, z_empty: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """z [k,77,d] pulled towards or pushed away from z_empty [77,d] by weights [k,77]; weight 1 is exact."""
    w = weights.to(device=z.device, dtype=z.dtype).unsqueeze(-1)
    return torch.where(w == 1.0, z, (z - z_empty) * w + z_empty)


def _core(te: nn.Module) -> nn.Module:
    return te.text_model if hasattr(te, "text_model") else te


@contextmanager
def _inject(te: nn.Module, embeds: dict[tuple[int, int], torch.Tensor]) -> Iterator[None]:
    """Replace token-embedding rows by textual-inversion vectors while the encoder runs."""
    if not embeds:
        yield
        return
    emb = _core(te).embeddings.token_embedding

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for (c, i), vec in embeds.items():
            output[c, i] = vec.to(device=output.device, dtype=output.dtype)
        return output

    handle = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _encode_one(te: nn.Module, tokens: EncoderTokens, role: EncoderRole, info: EncoderInfo,
                layer_idx: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    weighted = tokens.weighted
    ids = torch.cat([tokens.ids, tokens.empty_ids[None]]) if weighted else tokens.ids
    device = next(te.parameters()).device
    with _inject(te, tokens.embeds):
        out = te(input_ids=ids.to(device), output_hidden_states=True)
    layer = resolve_layer(role, info, layer_idx)
    if layer is None:
        hidden = out.last_hidden_state
    else:
        hidden = out.hidden_states[layer]
        if role.norm_hidden:
            hidden = _core(te).final_layer_norm(hidden)
    pooled = out.text_embeds if getattr(out, "text_embeds", None) is not None else out.pooler_output
    k = tokens.chunks
    z = apply_weights(hidden[:k], hidden[k], tokens.weights) if weighted else hidden
    offload = devices.offload_device()
    return (z.reshape(1, k * z.shape[1], z.shape[2]).to(device=offload, dtype=torch.float32),
            pooled[0:1].to(device=offload, dtype=torch.float32))


def encode(clip: ClipWrapper, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond [1, 77*k, dim], pooled [1, pdim]) for `tokens`, with clip's layer choice and patches."""
    roles = encoder_roles(clip)
    names = [e.name for e in tokens.encoders]
    if names != [r.name for r in roles]:
        raise ValueError(f"tokens are for encoders {names}, this CLIP has {[r.name for r in roles]}; "
                         f"tokenize with the same CLIP")
    outs: list[torch.Tensor] = []
    pooled = torch.empty(0)
    with clip.use() as encoders:
        for role, te, enc_tokens, info in zip(roles, encoders, tokens.encoders, clip.encoders):
            z, pooled = _encode_one(te, enc_tokens, role, info, clip.layer_idx)
            outs.append(z)
            projection = clip.pooled_projections.get(role.name)
            if projection is not None and not info.projected:
                pooled = pooled @ projection.to(pooled).T
    length = min(o.shape[1] for o in outs)
    cond = torch.cat([o[:, :length] for o in outs], dim=-1) if len(outs) > 1 else outs[0]
    return cond, pooled


def encode_text(clip: ClipWrapper, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """encode(clip, tokenize(clip, text))."""
    return encode(clip, tokenize(clip, text))


def conditioning(cond: torch.Tensor, pooled: torch.Tensor | None) -> list[list[Any]]:
    """The CONDITIONING value: `[[cond, {"pooled_output": pooled}]]`."""
    return [[cond, {"pooled_output": pooled}]]
