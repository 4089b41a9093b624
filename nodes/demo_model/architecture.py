"""The module configurations of diffloom's demo model: Stable Diffusion 1.x layout at reduced size.

The configs are written exactly as `nodes.models.detect` reads them back from the weights' shapes
(8 attention heads per UNet block, 64 channels per text-encoder head, GroupNorm groups = gcd(32, widths)),
so that the saved single file loads through the same code as any SD1 checkpoint and rebuilds these
modules bit for bit.

The text encoder trains on a compact vocabulary (only the tokens the captions use, in CLIP's order)
and is expanded to CLIP's 49,408-token table for export; the rows of tokens it never saw are zero,
so unknown words add nothing but position to a prompt, and the zero rows cost little in git.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

IMAGE_SIZE = 64
LATENT_SIZE = IMAGE_SIZE // 8
LATENT_CHANNELS = 4
CLIP_VOCAB = 49408
MAX_TOKENS = 77
TEXT_WIDTH = 64
# Widths whose gcd with 32 is small: the loader's rule then gives few GroupNorm groups, so each group
# pools several channels. With one channel per group (16 wide, 16 groups) GroupNorm is instance norm,
# which erases every channel's mean, i.e. a picture's colours: such a VAE does not learn at all.
UNET_WIDTHS = (48, 96)  # 16 groups: 3 and 6 channels per group
VAE_WIDTHS = (12, 24, 48, 48)  # 4 groups: 3, 6, 12, 12 channels per group
# SD1's VAE scaling factor: the exporter folds a per-channel normalisation into the VAE so that our
# latents, multiplied by it, have zero mean and unit variance, as SD1's do.
SD1_SCALING = 0.18215
CONTROLNET_EMBEDDING = (16, 32, 96, 256)  # diffusers' default, which the original layout's 15-slot hint block fits


def groups(widths: Sequence[int]) -> int:
    """GroupNorm groups for these widths, by the rule the loader uses."""
    return math.gcd(32, *widths)


def text_config(vocab_size: int = CLIP_VOCAB) -> dict[str, Any]:
    """transformers CLIPTextConfig arguments of the text encoder (as the loader derives them for SD1)."""
    return {"vocab_size": vocab_size, "hidden_size": TEXT_WIDTH, "intermediate_size": 4 * TEXT_WIDTH,
            "projection_dim": TEXT_WIDTH, "num_hidden_layers": 3, "num_attention_heads": TEXT_WIDTH // 64,
            "max_position_embeddings": MAX_TOKENS, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}


def unet_config() -> dict[str, Any]:
    """diffusers UNet2DConditionModel arguments (SD1 layout: cross-attention on every level)."""
    n = len(UNET_WIDTHS)
    return {"sample_size": LATENT_SIZE, "in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
            "down_block_types": ["CrossAttnDownBlock2D"] * n, "up_block_types": ["CrossAttnUpBlock2D"] * n,
            "block_out_channels": list(UNET_WIDTHS), "layers_per_block": 1, "cross_attention_dim": TEXT_WIDTH,
            "attention_head_dim": [8] * n, "use_linear_projection": False, "transformer_layers_per_block": [1] * n,
            "norm_num_groups": groups(UNET_WIDTHS), "upcast_attention": False, "flip_sin_to_cos": True,
            "freq_shift": 0, "act_fn": "silu"}


def vae_config() -> dict[str, Any]:
    """diffusers AutoencoderKL arguments (SD1 layout: four levels, f=8, four latent channels)."""
    n = len(VAE_WIDTHS)
    return {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n, "block_out_channels": list(VAE_WIDTHS),
            "layers_per_block": 1, "act_fn": "silu", "latent_channels": LATENT_CHANNELS,
            "norm_num_groups": groups(VAE_WIDTHS), "sample_size": IMAGE_SIZE, "scaling_factor": SD1_SCALING}


def build_text_encoder(vocab_size: int = CLIP_VOCAB) -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel  # noqa: PLC0415

    return CLIPTextModel(CLIPTextConfig(**text_config(vocab_size)))


def build_unet() -> nn.Module:
    from diffusers import UNet2DConditionModel  # noqa: PLC0415

    return UNet2DConditionModel(**unet_config())


def build_vae() -> nn.Module:
    from diffusers import AutoencoderKL  # noqa: PLC0415

    return AutoencoderKL(**vae_config())


def build_controlnet(unet: nn.Module) -> nn.Module:
    """A ControlNet initialised from `unet`'s encoder, taking an RGB map at picture resolution."""
    from diffusers import ControlNetModel  # noqa: PLC0415

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_EMBEDDING,
                                     conditioning_channels=3)


# ----------------------------------------------------------------------------- compact vocabulary


class CompactVocabulary:
    """The CLIP token ids a training set uses, and their positions in a compact embedding table."""

    def __init__(self, token_ids: Iterable[int]) -> None:
        self.ids = sorted(set(int(i) for i in token_ids))
        if not self.ids or self.ids[0] < 0 or self.ids[-1] >= CLIP_VOCAB:
            raise ValueError(f"compact vocabulary: token ids must lie in 0..{CLIP_VOCAB - 1}, got {self.ids[:3]}...")
        self._index = torch.full((CLIP_VOCAB,), -1, dtype=torch.long)
        self._index[torch.tensor(self.ids)] = torch.arange(len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def compact(self, input_ids: torch.Tensor) -> torch.Tensor:
        """CLIP token ids -> compact ids; a token outside the vocabulary is an error (training data only)."""
        out = self._index[input_ids]
        if (out < 0).any():
            unknown = sorted(set(input_ids[out < 0].tolist()))[:5]
            raise ValueError(f"compact vocabulary: token ids {unknown} are not in the {len(self)}-token training vocabulary")
        return out


def expand_text_encoder(compact: nn.Module, vocab: CompactVocabulary) -> nn.Module:
    """The full-vocabulary text encoder equal to `compact` on known tokens; unknown tokens embed to zero."""
    full = build_text_encoder(CLIP_VOCAB)
    state = {k: v.detach().clone() for k, v in compact.state_dict().items()}
    key = "embeddings.token_embedding.weight"
    table = torch.zeros(CLIP_VOCAB, TEXT_WIDTH, dtype=state[key].dtype)
    table[torch.tensor(vocab.ids)] = state[key]
    state[key] = table
    missing, unexpected = full.load_state_dict(state, strict=False)
    # position_ids is a non-persistent buffer in some transformers versions and a saved one in others.
    if [k for k in missing if not k.endswith("position_ids")] or [k for k in unexpected if not k.endswith("position_ids")]:
        raise RuntimeError(f"expand_text_encoder: missing {missing}, unexpected {unexpected}")
    return full.eval()
