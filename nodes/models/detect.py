"""Tell the model family and read every size of a Stable Diffusion checkpoint from its keys and shapes.

Works on original-layout (LDM/SGM) state dicts: `model.diffusion_model.*` (UNet), `first_stage_model.*`
(VAE), `cond_stage_model.*` / `conditioner.embedders.*` (text encoders). What the weights cannot tell
(attention head counts, activation functions, the VAE scaling factor) follows the family's published
configuration, with rules that also hold for reduced-size models of the same layout:

* UNet heads: SD1 uses 8 heads per block; the others use 64 channels per head (1 head below 64 channels).
* Text encoder heads: 64 channels per head; below that, 8 channels per head.
* GroupNorm groups: 32 when every width is a multiple of 32, else the largest common divisor up to 32.
* SDXL additional embeddings: 256 channels per time id (6 ids on the base, 5 on the refiner).
No torch import: shapes are plain tuples, so this also runs before any tensor is read.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Shapes = Mapping[str, Sequence[int]]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
PREDICTION_TYPES = ("epsilon", "v_prediction")
SDXL_TIME_EMBED_DIM = 256
VAE_SCALING = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}
# Where text encoders live in each family's single file: (role, layout, prefix).
TEXT_ENCODER_LAYOUTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "sd1": (("clip_l", "hf", "cond_stage_model.transformer."),),
    "sd2": (("clip_h", "open_clip", "cond_stage_model.model."),),
    "sdxl": (("clip_l", "hf", "conditioner.embedders.0.transformer."),
             ("clip_g", "open_clip", "conditioner.embedders.1.model.")),
    "sdxl_refiner": (("clip_g", "open_clip", "conditioner.embedders.0.model."),),
}
# The hidden layer each role conditions on by default, and whether the final LayerNorm is applied to it
# (as the reference implementations do: SD2 takes the penultimate layer through the final norm, SDXL
# takes the penultimate layers raw).
CLIP_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("sd1", "clip_l"): {"layer": -1, "final_norm": True},
    ("sd2", "clip_h"): {"layer": -2, "final_norm": True},
    ("sdxl", "clip_l"): {"layer": -2, "final_norm": False},
    ("sdxl", "clip_g"): {"layer": -2, "final_norm": False},
    ("sdxl_refiner", "clip_g"): {"layer": -2, "final_norm": False},
}
# SD 2.x 768-v and 512-base share their weights' shapes; this bias is much wider on the v models.
V_PREDICTION_STD = 0.09


class CheckpointError(ValueError):
    """A model file that cannot be read or understood; the message names the file."""


@dataclass(frozen=True)
class UNetStructure:
    """What the shapes of an LDM UNet say, before any family rule is applied."""

    in_channels: int
    out_channels: int
    model_channels: int
    time_embed_dim: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    transformer_depth: tuple[int, ...]  # per level, 0 where a level has no attention
    transformer_depth_middle: int
    context_dim: int | None
    use_linear_in_transformer: bool
    adm_in_channels: int | None
    last_attention_output_block: int | None

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder found in a file: its role, where its keys are, and its transformers config."""

    role: str  # clip_l | clip_h | clip_g
    layout: str  # hf | open_clip
    prefix: str
    config: dict[str, Any]
    with_projection: bool


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the modules of a checkpoint, read from its state dict."""

    family: str
    variant: str  # base | inpaint | depth | ip2p
    prediction_type: str
    unet_prefix: str | None
    unet_config: dict[str, Any] | None
    vae_prefix: str | None
    vae_config: dict[str, Any] | None
    text_encoders: tuple[TextEncoderSpec, ...] = ()
    zero_snr: bool = False
    notes: tuple[str, ...] = field(default=())


def _shape(shapes: Shapes, key: str) -> tuple[int, ...]:
    return tuple(int(d) for d in shapes[key])


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def describe_keys(shapes: Shapes, limit: int = 6) -> str:
    """A short account of what a state dict holds: its commonest key prefixes and a few keys."""
    if not shapes:
        return "no tensors at all"
    heads = Counter(".".join(k.split(".")[:2]) for k in shapes)
    common = ", ".join(f"{p}.* ({n})" for p, n in heads.most_common(limit))
    sample = ", ".join(list(shapes)[:3])
    return f"{len(shapes)} tensors; commonest prefixes: {common}; first keys: {sample}"


def norm_groups(channels: Sequence[int]) -> int:
    """GroupNorm group count: 32 for standard widths, a common divisor for reduced ones."""
    return math.gcd(32, *channels)


def text_heads(hidden: int) -> int:
    """Attention heads of a CLIP text encoder of width `hidden` (64 per head; 8 per head below that)."""
    if hidden % 64 == 0:
        return hidden // 64
    return hidden // 8 if hidden % 8 == 0 else 1


def unet_heads(family: str, channels: int) -> int:
    """Attention heads of a UNet block of `channels` channels in `family`."""
    if family == "sd1":
        return 8 if channels % 8 == 0 else 1
    return channels // 64 if channels % 64 == 0 else 1


# ---------------------------------------------------------------------------------------------- UNet


def find_unet_prefix(shapes: Shapes) -> str | None:
    """`model.diffusion_model.` for a checkpoint, '' for a bare LDM UNet, None if there is no LDM UNet."""
    for prefix in (UNET_PREFIX, ""):
        if f"{prefix}input_blocks.0.0.weight" in shapes:
            return prefix
    return None


def read_unet_structure(shapes: Shapes, prefix: str, source: str) -> UNetStructure:
    """Read every size of an LDM UNet from its shapes."""
    p = prefix

    def need(key: str) -> tuple[int, ...]:
        if p + key not in shapes:
            raise CheckpointError(f"{source}: UNet key {p + key!r} is missing; {describe_keys(shapes)}")
        return _shape(shapes, p + key)

    model_channels, in_channels = need("input_blocks.0.0.weight")[:2]
    out_channels = need("out.2.weight")[0]
    time_embed_dim = need("time_embed.0.weight")[0]
    linear_flags: set[bool] = set()
    context_dims: set[int] = set()

    def attention_depth(block: str) -> int:
        if f"{p}{block}.proj_in.weight" not in shapes:
            return 0
        linear_flags.add(len(_shape(shapes, f"{p}{block}.proj_in.weight")) == 2)
        depth = len(_indices(shapes, re.escape(f"{p}{block}.transformer_blocks.") + r"(\d+)\."))
        for t in range(depth):
            key = f"{p}{block}.transformer_blocks.{t}.attn2.to_k.weight"
            if key in shapes:
                context_dims.add(_shape(shapes, key)[1])
        return depth

    # Input blocks: resblocks (with attention) grouped into levels, levels closed by a downsample.
    levels: list[list[tuple[int, int]]] = [[]]  # per level: (channels, attention depth) of each resblock
    for i in _indices(shapes, re.escape(f"{p}input_blocks.") + r"(\d+)\.")[1:]:
        if f"{p}input_blocks.{i}.0.op.weight" in shapes:
            levels.append([])
        elif f"{p}input_blocks.{i}.0.in_layers.2.weight" in shapes:
            ch = _shape(shapes, f"{p}input_blocks.{i}.0.in_layers.2.weight")[0]
            levels[-1].append((ch, attention_depth(f"input_blocks.{i}.1")))
        else:
            raise CheckpointError(f"{source}: UNet input block {i} is neither a resblock nor a downsample "
                                  f"(no {p}input_blocks.{i}.0.in_layers.2.weight or .0.op.weight)")
    counts = {len(level) for level in levels}
    if len(counts) != 1 or 0 in counts:
        raise CheckpointError(f"{source}: UNet levels have {[len(lv) for lv in levels]} resblocks; "
                              "only the same number in every level is supported")
    num_res_blocks = counts.pop()
    channel_mult: list[int] = []
    depths: list[int] = []
    for n, level in enumerate(levels):
        chans = {c for c, _ in level}
        level_depths = {d for _, d in level}
        if len(chans) != 1 or len(level_depths) != 1:
            raise CheckpointError(f"{source}: UNet level {n} mixes widths {sorted(chans)} or attention depths "
                                  f"{sorted(level_depths)}; every resblock of a level must match")
        ch = chans.pop()
        if ch % model_channels:
            raise CheckpointError(f"{source}: UNet level {n} width {ch} is not a multiple of {model_channels}")
        channel_mult.append(ch // model_channels)
        depths.append(level_depths.pop())

    if f"{p}middle_block.1.proj_in.weight" not in shapes or f"{p}middle_block.2.in_layers.2.weight" not in shapes:
        raise CheckpointError(f"{source}: UNet middle block is not resblock-attention-resblock "
                              f"(no {p}middle_block.1.proj_in.weight); not a Stable Diffusion UNet")
    depth_middle = attention_depth("middle_block.1")

    # Output blocks mirror the input levels with one more resblock each.
    n_out = len(_indices(shapes, re.escape(f"{p}output_blocks.") + r"(\d+)\."))
    expected_out = len(levels) * (num_res_blocks + 1)
    if n_out != expected_out:
        raise CheckpointError(f"{source}: UNet has {n_out} output blocks, expected {expected_out} "
                              f"({len(levels)} levels x {num_res_blocks + 1})")
    last_attention = None
    for i in range(n_out):
        level = len(levels) - 1 - i // (num_res_blocks + 1)
        d = attention_depth(f"output_blocks.{i}.1")
        if d:
            last_attention = i
        if d != depths[level]:
            raise CheckpointError(f"{source}: UNet output block {i} has attention depth {d} but input level "
                                  f"{level} has {depths[level]}; asymmetric UNets are not supported")
    if len(linear_flags) > 1:
        raise CheckpointError(f"{source}: UNet mixes linear and 1x1-conv transformer projections")
    if len(context_dims) > 1:
        raise CheckpointError(f"{source}: UNet cross-attention context widths differ: {sorted(context_dims)}")
    adm = _shape(shapes, f"{p}label_emb.0.0.weight")[1] if f"{p}label_emb.0.0.weight" in shapes else None
    if f"{p}label_emb.weight" in shapes:
        raise CheckpointError(f"{source}: UNet has a class-label embedding (label_emb.weight): an upscaler or "
                              "class-conditional model, not supported")
    return UNetStructure(
        in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
        time_embed_dim=time_embed_dim, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
        transformer_depth=tuple(depths), transformer_depth_middle=depth_middle,
        context_dim=context_dims.pop() if context_dims else None,
        use_linear_in_transformer=linear_flags.pop() if linear_flags else False,
        adm_in_channels=adm, last_attention_output_block=last_attention)


def unet_family(structure: UNetStructure, source: str) -> str | None:
    """The family a UNet's shapes alone imply (None when only the text encoders can tell sd1 from sd2)."""
    adm = structure.adm_in_channels
    if adm is None:
        return None
    if structure.context_dim is not None and adm - 5 * SDXL_TIME_EMBED_DIM == structure.context_dim:
        return "sdxl_refiner"
    if adm > 6 * SDXL_TIME_EMBED_DIM:
        return "sdxl"
    raise CheckpointError(f"{source}: UNet has an additional embedding of {adm} channels (label_emb.0.0) that "
                          "matches neither SDXL (pooled + 6x256) nor the SDXL refiner (context + 5x256); "
                          "unCLIP and other class-embedding models are not supported")


def variant_of(structure: UNetStructure, source: str) -> str:
    """base / inpaint / depth / ip2p from the UNet's extra input channels."""
    extra = structure.in_channels - structure.out_channels
    variants = {0: "base", structure.out_channels + 1: "inpaint", 1: "depth", structure.out_channels: "ip2p"}
    if extra not in variants:
        raise CheckpointError(f"{source}: UNet takes {structure.in_channels} input channels for "
                              f"{structure.out_channels} latent channels; known: latent (base), latent+1 (depth), "
                              "2x latent (instruct-pix2pix), 2x latent+1 (inpainting)")
    return variants[extra]


def unet_config(structure: UNetStructure, family: str, prediction_type: str = "epsilon") -> dict[str, Any]:
    """A diffusers UNet2DConditionModel config for `structure` in `family`."""
    channels = structure.block_out_channels
    attention = [d > 0 for d in structure.transformer_depth]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    # diffusers' middle block takes the depth of the last level, so a last level without attention carries it.
    depths = [d if d else 1 for d in structure.transformer_depth]
    if not attention[-1]:
        depths[-1] = structure.transformer_depth_middle
    elif depths[-1] != structure.transformer_depth_middle:
        raise CheckpointError(f"UNet middle attention depth {structure.transformer_depth_middle} differs from "
                              f"the last level's {depths[-1]}; diffusers cannot express that")
    config: dict[str, Any] = {
        "sample_size": {"sd1": 64, "sd2": 96 if prediction_type == "v_prediction" else 64}.get(family, 128),
        "in_channels": structure.in_channels,
        "out_channels": structure.out_channels,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": list(channels),
        "layers_per_block": structure.num_res_blocks,
        "cross_attention_dim": structure.context_dim,
        "attention_head_dim": [unet_heads(family, c) for c in channels],
        "use_linear_projection": structure.use_linear_in_transformer,
        "transformer_layers_per_block": depths,
        "norm_num_groups": norm_groups(channels),
        "upcast_attention": family == "sd2" and prediction_type == "v_prediction",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "act_fn": "silu",
    }
    if structure.time_embed_dim != channels[0] * 4:
        config["time_embedding_dim"] = structure.time_embed_dim
    if family in ("sdxl", "sdxl_refiner"):
        config.update(addition_embed_type="text_time", addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
                      projection_class_embeddings_input_dim=structure.adm_in_channels)
    return config


# ----------------------------------------------------------------------------------------------- VAE


def find_vae_prefix(shapes: Shapes) -> str | None:
    for prefix in (*VAE_PREFIXES, ""):
        if f"{prefix}encoder.conv_in.weight" in shapes and f"{prefix}decoder.conv_out.weight" in shapes:
            return prefix
    return None


def vae_config(shapes: Shapes, prefix: str, source: str, scaling_factor: float = 0.18215,
               sample_size: int = 512) -> dict[str, Any]:
    """A diffusers AutoencoderKL config read from an LDM VAE's shapes."""
    p = prefix

    def need(key: str) -> tuple[int, ...]:
        if p + key not in shapes:
            raise CheckpointError(f"{source}: VAE key {p + key!r} is missing; {describe_keys(shapes)}")
        return _shape(shapes, p + key)

    in_channels = need("encoder.conv_in.weight")[1]
    out_channels = need("decoder.conv_out.weight")[0]
    latent = need("decoder.conv_in.weight")[1]
    if need("encoder.conv_out.weight")[0] != 2 * latent:
        raise CheckpointError(f"{source}: VAE encoder emits {need('encoder.conv_out.weight')[0]} channels, "
                              f"expected 2 x {latent} latent channels (mean and log-variance)")
    levels = _indices(shapes, re.escape(f"{p}encoder.down.") + r"(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(f"{source}: VAE encoder levels {levels} are not 0..n-1")
    widths: list[int] = []
    blocks: set[int] = set()
    for i in levels:
        n = _indices(shapes, re.escape(f"{p}encoder.down.{i}.block.") + r"(\d+)\.")
        blocks.add(len(n))
        widths.append(need(f"encoder.down.{i}.block.0.conv2.weight")[0])
    up_levels = _indices(shapes, re.escape(f"{p}decoder.up.") + r"(\d+)\.")
    if len(blocks) != 1 or len(up_levels) != len(levels):
        raise CheckpointError(f"{source}: VAE has uneven levels (resblocks per encoder level {sorted(blocks)}, "
                              f"{len(levels)} encoder and {len(up_levels)} decoder levels)")
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "block_out_channels": widths,
        "layers_per_block": blocks.pop(),
        "act_fn": "silu",
        "latent_channels": latent,
        "norm_num_groups": norm_groups(widths),
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
        "use_quant_conv": f"{p}quant_conv.weight" in shapes,
        "use_post_quant_conv": f"{p}post_quant_conv.weight" in shapes,
        "mid_block_add_attention": f"{p}encoder.mid.attn_1.q.weight" in shapes,
    }


# ------------------------------------------------------------------------------------- text encoders


def hf_clip_base(shapes: Shapes, prefix: str) -> str | None:
    """Where the `embeddings.*` keys of an HF-layout CLIP under `prefix` start (with or without `text_model.`)."""
    for base in (prefix + "text_model.", prefix):
        if f"{base}embeddings.token_embedding.weight" in shapes:
            return base
    return None


def _clip_config(vocab: int, hidden: int, positions: int, layers: int, intermediate: int, projection: int,
                 act: str) -> dict[str, Any]:
    # Token ids 0/2/1 are the legacy values of the SD/SDXL text encoder configs: with eos_token_id == 2,
    # transformers pools at the highest token id, which is <|endoftext|> for CLIP's vocabulary.
    return {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
            "projection_dim": projection, "num_hidden_layers": layers, "num_attention_heads": text_heads(hidden),
            "max_position_embeddings": positions, "hidden_act": act, "layer_norm_eps": 1e-5,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def hf_clip_spec(shapes: Shapes, prefix: str, role: str, source: str) -> TextEncoderSpec:
    """Config of a CLIP text encoder stored in transformers' layout (SD1, SDXL's first encoder)."""
    base = hf_clip_base(shapes, prefix)
    if base is None:
        raise CheckpointError(f"{source}: no CLIP text encoder under {prefix!r} "
                              f"(no {prefix}text_model.embeddings.token_embedding.weight)")
    vocab, hidden = _shape(shapes, f"{base}embeddings.token_embedding.weight")
    positions = _shape(shapes, f"{base}embeddings.position_embedding.weight")[0]
    layers = len(_indices(shapes, re.escape(f"{base}encoder.layers.") + r"(\d+)\."))
    intermediate = _shape(shapes, f"{base}encoder.layers.0.mlp.fc1.weight")[0]
    proj_key = f"{prefix}text_projection.weight"
    projection = _shape(shapes, proj_key)[0] if proj_key in shapes else hidden
    act = "quick_gelu" if role == "clip_l" else "gelu"
    return TextEncoderSpec(role, "hf", prefix, _clip_config(vocab, hidden, positions, layers, intermediate,
                                                            projection, act), proj_key in shapes)


def open_clip_spec(shapes: Shapes, prefix: str, role: str, source: str) -> TextEncoderSpec:
    """Config of an OpenCLIP text tower (SD2's ViT-H, SDXL's bigG) as a transformers CLIP text config."""
    key = f"{prefix}token_embedding.weight"
    if key not in shapes:
        raise CheckpointError(f"{source}: no OpenCLIP text encoder under {prefix!r} (no {key})")
    vocab, hidden = _shape(shapes, key)
    positions = _shape(shapes, f"{prefix}positional_embedding")[0]
    layers = len(_indices(shapes, re.escape(f"{prefix}transformer.resblocks.") + r"(\d+)\."))
    intermediate = _shape(shapes, f"{prefix}transformer.resblocks.0.mlp.c_fc.weight")[0]
    proj_key = f"{prefix}text_projection"
    projection = _shape(shapes, proj_key)[1] if proj_key in shapes else hidden
    with_projection = role == "clip_g"
    if with_projection and proj_key not in shapes:
        raise CheckpointError(f"{source}: OpenCLIP-G text encoder under {prefix!r} lacks {proj_key}")
    return TextEncoderSpec(role, "open_clip", prefix, _clip_config(vocab, hidden, positions, layers, intermediate,
                                                                   projection, "gelu"), with_projection)


def text_encoder_family(shapes: Shapes) -> str | None:
    """The family whose text-encoder layout a state dict holds, or None."""
    if hf_clip_base(shapes, "cond_stage_model.transformer.") is not None:
        return "sd1"
    if "cond_stage_model.model.token_embedding.weight" in shapes:
        return "sd2"
    if "conditioner.embedders.1.model.token_embedding.weight" in shapes:
        return "sdxl"
    if "conditioner.embedders.0.model.token_embedding.weight" in shapes:
        return "sdxl_refiner"
    return None


def text_encoder_specs(shapes: Shapes, family: str, source: str) -> tuple[TextEncoderSpec, ...]:
    """The text encoders of `family` found in the state dict (all of them, or an error)."""
    specs = []
    for role, layout, prefix in TEXT_ENCODER_LAYOUTS[family]:
        read = hf_clip_spec if layout == "hf" else open_clip_spec
        specs.append(read(shapes, prefix, role, source))
    return tuple(specs)


# --------------------------------------------------------------------------------------- the family


def detect_checkpoint(shapes: Shapes, *, source: str, tensor: Callable[[str], Any] | None = None,
                      prediction_type: str | None = None, need_unet: bool = True) -> ModelSpec:
    """Decide family, variant and prediction type of an original-layout checkpoint and build its configs.

    `tensor(key)` gives a tensor's values (for the SD2 v-prediction heuristic); `prediction_type`
    overrides every guess. Raises CheckpointError naming `source` when the layout is not understood.
    """
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise CheckpointError(f"{source}: prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")
    unet_prefix = find_unet_prefix(shapes)
    structure = read_unet_structure(shapes, unet_prefix, source) if unet_prefix is not None else None
    te_family = text_encoder_family(shapes)
    if structure is None and (need_unet or te_family is None):
        raise CheckpointError(f"{source}: not a Stable Diffusion checkpoint: no UNet "
                              f"({UNET_PREFIX}input_blocks.0.0.weight); {describe_keys(shapes)}")
    family = unet_family(structure, source) if structure is not None else None
    if family is None:
        if te_family is not None:
            family = te_family
        else:
            assert structure is not None
            family = "sd2" if structure.use_linear_in_transformer else "sd1"
    if te_family is not None and te_family != family:
        raise CheckpointError(f"{source}: the UNet looks like {family} but the text encoders are laid out as "
                              f"{te_family}")
    encoders = text_encoder_specs(shapes, family, source) if te_family is not None else ()
    notes: list[str] = []
    if structure is not None:
        _check_context(structure, family, encoders, source)
    variant = variant_of(structure, source) if structure is not None else "base"
    zero_snr = "ztsnr" in shapes
    if prediction_type is None:
        prediction_type = _guess_prediction(shapes, structure, unet_prefix, family, variant, tensor, notes)
    vae_prefix = find_vae_prefix(shapes)
    vconfig = None
    if vae_prefix is not None:
        sample = {"sd1": 512, "sd2": 768 if prediction_type == "v_prediction" else 512}.get(family, 1024)
        vconfig = vae_config(shapes, vae_prefix, source, VAE_SCALING[family], sample)
    return ModelSpec(
        family=family, variant=variant, prediction_type=prediction_type, unet_prefix=unet_prefix,
        unet_config=unet_config(structure, family, prediction_type) if structure is not None else None,
        vae_prefix=vae_prefix, vae_config=vconfig, text_encoders=encoders, zero_snr=zero_snr, notes=tuple(notes))


def _check_context(structure: UNetStructure, family: str, encoders: Sequence[TextEncoderSpec], source: str) -> None:
    """The UNet's cross-attention width must be what the text encoders produce."""
    if not encoders or structure.context_dim is None:
        return
    widths = {e.role: e.config["hidden_size"] for e in encoders}
    expected = sum(widths.values())
    if structure.context_dim != expected:
        raise CheckpointError(f"{source}: UNet cross-attention width {structure.context_dim} does not match the "
                              f"text encoders' {widths} (sum {expected})")
    if family == "sdxl":
        pooled = next(e.config["projection_dim"] for e in encoders if e.role == "clip_g")
        adm = structure.adm_in_channels
        if adm != pooled + 6 * SDXL_TIME_EMBED_DIM:
            raise CheckpointError(f"{source}: SDXL UNet additional embedding {adm} != pooled width {pooled} + "
                                  f"6 x {SDXL_TIME_EMBED_DIM}")


def _guess_prediction(shapes: Shapes, structure: UNetStructure | None, prefix: str | None, family: str,
                      variant: str, tensor: Callable[[str], Any] | None, notes: list[str]) -> str:
    if "v_pred" in shapes:
        notes.append("prediction type from the 'v_pred' marker key")
        return "v_prediction"
    if family != "sd2" or variant != "base" or structure is None or tensor is None:
        return "epsilon"
    block = structure.last_attention_output_block
    key = f"{prefix}output_blocks.{block}.1.transformer_blocks.0.norm1.bias"
    if block is None or key not in shapes:
        return "epsilon"
    std = float(tensor(key).float().std())
    notes.append(f"prediction type from the std {std:.4f} of {key} (v-prediction above {V_PREDICTION_STD})")
    return "v_prediction" if std > V_PREDICTION_STD else "epsilon"


def clip_defaults(family: str, role: str) -> dict[str, Any]:
    """The hidden layer and final-norm use a role conditions on by default in `family`."""
    return dict(CLIP_DEFAULTS.get((family, role), {"layer": -1, "final_norm": True}))
