"""Model files and model management: loading, format detection, export, tiny test models.

Names are re-exported lazily so that importing `nodes.models` (or a sibling module such as the
model manager) does not import diffusers and transformers until something is loaded.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointParts": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_diffusers_folder": "checkpoint",
    "load_unet_file": "checkpoint",
    "load_vae_file": "checkpoint",
    "load_text_encoder_file": "checkpoint",
    "read_state_dict": "checkpoint",
    "TensorFile": "checkpoint",
    "detect_file": "checkpoint",
    "scheduler_config": "checkpoint",
    "CheckpointError": "detect",
    "ModelSpec": "detect",
    "detect_checkpoint": "detect",
    "UnsafePickleError": "safe_pickle",
    "load_torch_file": "safe_pickle",
    "clip_tokenizer": "tokenizers",
    "save_checkpoint": "ldm_export",
    "write_diffusers_folder": "ldm_export",
    "checkpoint_to_ldm": "ldm_export",
    "tiny_sd1": "tiny",
    "tiny_sd2": "tiny",
    "tiny_sdxl": "tiny",
    "tiny_sdxl_refiner": "tiny",
    "tiny_sd2_depth": "tiny",
    "tiny_inpaint": "tiny",
    "write_tiny_checkpoint": "tiny",
    "tiny_parts": "tiny",
    "random_parts": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nodes.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nodes.models.{module}"), name)
