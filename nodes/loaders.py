"""Loader nodes: checkpoints, VAEs, text encoders, UNets and LoRAs from the model folders.

Models load once and are shared (the model manager keeps them under a memory budget); a LoRA makes
new MODEL and CLIP wrappers that share the base weights.
"""
from __future__ import annotations

from typing import Any

from graph.declare import Combo, Float, In, Int, node

from .models.lora import apply_lora
from .models.wrappers import ClipWrapper, ModelWrapper, VaeWrapper
from .runtime import runtime
from .text.embeddings import folder_lookup


def _files(key: str) -> Any:
    """Combo choices that follow the folder's contents at request time."""
    return lambda: runtime().folders.get_filename_list(key)


def _path(key: str, name: str) -> str:
    return runtime().folders.get_full_path_or_raise(key, name)


def _checkpoint_fingerprint(key: str, input_name: str) -> Any:
    """Re-run a loader when its file changes on disk (same name, new content)."""
    def fingerprint(**literals: Any) -> Any:
        import os  # noqa: PLC0415

        path = runtime().folders.get_full_path(key, literals.get(input_name) or "")
        if path is None:
            return None
        st = os.stat(path)
        return [st.st_mtime_ns, st.st_size]
    return fingerprint


@node(category="loaders", outputs=("MODEL", "CLIP", "VAE"), display_name="Load Checkpoint",
      fingerprint=_checkpoint_fingerprint("checkpoints", "ckpt_name"))
def CheckpointLoaderSimple(ckpt_name: str = Combo(_files("checkpoints"), tooltip="The checkpoint to load.")
                           ) -> tuple[ModelWrapper, ClipWrapper, VaeWrapper]:
    """Load a checkpoint's diffusion model, text encoders and VAE (SD1.x, SD2.x, SDXL; single file)."""
    rt = runtime()
    loaded = rt.models.load_checkpoint(_path("checkpoints", ckpt_name), embedding_lookup=folder_lookup(rt.folders))
    model, clip, vae = loaded.model, loaded.clip, loaded.vae
    if model is not None and vae is not None:
        model.model_options["preview_vae"] = vae
    return model, clip, vae


@node(category="loaders", outputs="VAE", display_name="Load VAE",
      fingerprint=_checkpoint_fingerprint("vae", "vae_name"))
def VAELoader(vae_name: str = Combo(_files("vae"))) -> VaeWrapper:
    """Load a VAE file (original or diffusers layout)."""
    return runtime().models.load_vae(_path("vae", vae_name))


@node(category="advanced/loaders", outputs="CLIP", display_name="Load CLIP",
      fingerprint=_checkpoint_fingerprint("text_encoders", "clip_name"))
def CLIPLoader(clip_name: str = Combo(_files("text_encoders")),
               type: str = Combo(["stable_diffusion", "sd2", "sdxl"])) -> ClipWrapper:  # noqa: A002 - ComfyUI's name
    """Load a text encoder file (CLIP-L for SD1, OpenCLIP-H for SD2, one of SDXL's two)."""
    rt = runtime()
    return rt.models.load_text_encoder(_path("text_encoders", clip_name), type,
                                       embedding_lookup=folder_lookup(rt.folders))


@node(category="advanced/loaders", outputs="MODEL", display_name="Load Diffusion Model",
      fingerprint=_checkpoint_fingerprint("diffusion_models", "unet_name"))
def UNETLoader(unet_name: str = Combo(_files("diffusion_models")),
               weight_dtype: str = Combo(["default", "fp16", "bf16", "fp32"])) -> ModelWrapper:
    """Load a diffusion model (UNet) file on its own."""
    from .device import parse_dtype  # noqa: PLC0415

    dtype = None if weight_dtype == "default" else parse_dtype(weight_dtype)
    return runtime().models.load_unet(_path("diffusion_models", unet_name), dtype=dtype)


@node(category="loaders", outputs=("MODEL", "CLIP"), display_name="Load LoRA",
      fingerprint=_checkpoint_fingerprint("loras", "lora_name"))
def LoraLoader(model: ModelWrapper = In("MODEL", tooltip="The diffusion model the LoRA will be applied to."),
               clip: ClipWrapper = In("CLIP", tooltip="The CLIP model the LoRA will be applied to."),
               lora_name: str = Combo(_files("loras"), tooltip="The name of the LoRA."),
               strength_model: float = Float(1.0, min=-100.0, max=100.0, step=0.01),
               strength_clip: float = Float(1.0, min=-100.0, max=100.0, step=0.01)) -> tuple[ModelWrapper, ClipWrapper]:
    """Apply a LoRA to a model and its text encoder; the base weights stay shared and untouched."""
    new_model, new_clip = apply_lora(model, clip, _path("loras", lora_name), strength_model, strength_clip,
                                     name=lora_name)
    return new_model, new_clip


@node(category="loaders", outputs="MODEL", fingerprint=_checkpoint_fingerprint("loras", "lora_name"))
def LoraLoaderModelOnly(model: ModelWrapper = In("MODEL"), lora_name: str = Combo(_files("loras")),
                        strength_model: float = Float(1.0, min=-100.0, max=100.0, step=0.01)) -> ModelWrapper:
    """Apply a LoRA to the diffusion model only."""
    new_model, _ = apply_lora(model, None, _path("loras", lora_name), strength_model, 0.0, name=lora_name)
    return new_model


@node(category="conditioning", outputs="CLIP", display_name="CLIP Set Last Layer")
def CLIPSetLastLayer(clip: ClipWrapper = In("CLIP"),
                     stop_at_clip_layer: int = Int(-1, min=-24, max=-1, step=1)) -> ClipWrapper:
    """Condition on an earlier layer of the text encoder (-2 is "clip skip 2")."""
    return clip.with_layer_idx(stop_at_clip_layer)
