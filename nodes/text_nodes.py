"""Text nodes: tokenize and encode prompts (ComfyUI's weighting, embeddings, long prompts, SDXL)."""
from __future__ import annotations

from typing import Any

from graph.declare import Float, In, Int, String, node
from graph.schema import MAX_RESOLUTION, Output

from .models.wrappers import ClipWrapper
from .text import Tokens, conditioning, encode, tokenize

Conditioning = list[list[Any]]


@node(category="conditioning", display_name="CLIP Text Encode (Prompt)",
      outputs=Output("CONDITIONING", tooltip="The encoded text used to guide the diffusion model."))
def CLIPTextEncode(text: str = String(multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
                   clip: ClipWrapper = In("CLIP", tooltip="The CLIP model used for encoding the text.")) -> Conditioning:
    """Encode a text prompt with a CLIP model into conditioning that guides the diffusion model."""
    cond, pooled = encode(clip, tokenize(clip, text))
    return conditioning(cond, pooled)


@node(category="conditioning/text", outputs="TOKENS", display_name="CLIP Tokenize")
def CLIPTokenize(text: str = String(multiline=True, dynamic_prompts=True), clip: ClipWrapper = In("CLIP")) -> Tokens:
    """Split a prompt into weighted tokens for each of the CLIP's text encoders (the first half of CLIPTextEncode)."""
    return tokenize(clip, text)


@node(category="conditioning/text", outputs="CONDITIONING", display_name="CLIP Encode Tokens")
def CLIPEncodeTokens(tokens: Tokens = In("TOKENS"), clip: ClipWrapper = In("CLIP")) -> Conditioning:
    """Encode tokens into conditioning (the second half of CLIPTextEncode)."""
    cond, pooled = encode(clip, tokens)
    return conditioning(cond, pooled)


@node(category="advanced/conditioning", outputs="CONDITIONING")
def CLIPTextEncodeSDXL(clip: ClipWrapper = In("CLIP"),
                       width: int = Int(1024, min=0, max=MAX_RESOLUTION),
                       height: int = Int(1024, min=0, max=MAX_RESOLUTION),
                       crop_w: int = Int(0, min=0, max=MAX_RESOLUTION),
                       crop_h: int = Int(0, min=0, max=MAX_RESOLUTION),
                       target_width: int = Int(1024, min=0, max=MAX_RESOLUTION),
                       target_height: int = Int(1024, min=0, max=MAX_RESOLUTION),
                       text_g: str = String(multiline=True, dynamic_prompts=True),
                       text_l: str = String(multiline=True, dynamic_prompts=True)) -> Conditioning:
    """SDXL encoding with separate prompts for its two text encoders and its size and crop conditioning."""
    tokens_g = tokenize(clip, text_g)
    tokens_l = tokenize(clip, text_l)
    merged = Tokens(tuple(tokens_l[e.name] if e.name == "clip_l" else e for e in tokens_g.encoders),
                    text=f"{text_g} | {text_l}")
    cond, pooled = encode(clip, merged)
    return _with_extras(conditioning(cond, pooled), width=width, height=height, crop_w=crop_w, crop_h=crop_h,
                        target_width=target_width, target_height=target_height)


@node(category="advanced/conditioning", outputs="CONDITIONING")
def CLIPTextEncodeSDXLRefiner(ascore: float = Float(6.0, min=0.0, max=1000.0, step=0.01),
                              width: int = Int(1024, min=0, max=MAX_RESOLUTION),
                              height: int = Int(1024, min=0, max=MAX_RESOLUTION),
                              text: str = String(multiline=True, dynamic_prompts=True),
                              clip: ClipWrapper = In("CLIP")) -> Conditioning:
    """SDXL refiner encoding with its aesthetic-score conditioning."""
    cond, pooled = encode(clip, tokenize(clip, text))
    return _with_extras(conditioning(cond, pooled), aesthetic_score=ascore, width=width, height=height)


def _with_extras(cond: Conditioning, **extras: Any) -> Conditioning:
    return [[c, {**options, **extras}] for c, options in cond]
