"""Shared helpers to run the files in workflows/ on tiny models (checkpoint names and sizes swapped in)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
TINY_LORA = "tiny-lora.safetensors"
# Written by write_tiny_control_models (nodes.models.tiny_control) for the ControlNet and depth workflows.
TINY_CONTROLNET = "tiny-controlnet-sd1.safetensors"
TINY_DEPTH_MODEL = "tiny-dpt"
TINY_DEPTH_CHECKPOINT = "tiny-sd2-depth.safetensors"


def tiny_version(prompt: dict[str, Any]) -> dict[str, Any]:
    """The same graph on tiny checkpoints, 2 steps and 64 px, so the whole set runs in seconds."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if "ckpt_name" in inputs and "depth" in inputs["ckpt_name"].lower():
            inputs["ckpt_name"] = TINY_DEPTH_CHECKPOINT
        elif "ckpt_name" in inputs:
            inputs["ckpt_name"] = "tiny-sdxl.safetensors" if "xl" in inputs["ckpt_name"].lower() else "tiny-sd1.safetensors"
        if "control_net_name" in inputs:
            inputs["control_net_name"] = TINY_CONTROLNET
        if kind == "DepthEstimator":
            inputs["model_name"] = TINY_DEPTH_MODEL
        if "lora_name" in inputs:
            inputs["lora_name"] = TINY_LORA
        if kind in ("KSampler", "KSamplerAdvanced", "SamplingStart") and isinstance(inputs.get("steps"), int):
            inputs["steps"] = 3 if kind == "SamplingStart" else 2
        if kind == "SamplingSteps" and inputs.get("steps"):
            inputs["steps"] = 1
        if kind in ("EmptyLatentImage", "CLIPTextEncodeSDXL", "ImageScale"):
            for key in ("width", "height", "target_width", "target_height"):
                if key in inputs:
                    inputs[key] = 64
    return prompt


def write_tiny_lora(models_dir: Path) -> Path:
    """A kohya-format LoRA for the tiny SD1 model: low-rank changes to two attention projections and a text layer."""
    from safetensors.torch import save_file

    from nodes.models.tiny import tiny_sd1

    parts = tiny_sd1()
    g = torch.Generator().manual_seed(0)
    targets = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": parts.unet,
               "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v": parts.unet,
               "lora_te_text_model_encoder_layers_0_self_attn_q_proj": parts.text_encoders[0]}
    state = {}
    for key, module in targets.items():
        name = key.split("_", 2)[2]
        if key.startswith("lora_te_"):
            name = name.removeprefix("text_model_")
        weight = dict(module.named_parameters())[_dotted(module, name) + ".weight"]
        out_f, in_f = weight.shape
        state[f"{key}.lora_down.weight"] = torch.randn((4, in_f), generator=g) * 0.1
        state[f"{key}.lora_up.weight"] = torch.randn((out_f, 4), generator=g) * 0.1
        state[f"{key}.alpha"] = torch.tensor(4.0)
    path = models_dir / "loras" / TINY_LORA
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def _dotted(module: torch.nn.Module, underscored: str) -> str:
    """The module path whose underscored form is `underscored` (kohya names flatten dots)."""
    for name, _ in module.named_modules():
        if name.replace(".", "_") == underscored or name.replace(".", "_").endswith(underscored):
            return name
    raise KeyError(underscored)


def copy_inputs(input_dir: Path) -> None:
    for image in (ROOT / "workflows" / "input").glob("*.png"):
        shutil.copy(image, input_dir / image.name)
