"""Measure how well the demo model follows its prompts, from the saved files, with diffusers' pipelines.

    python -m nodes.demo_model.evaluate --models models --out /tmp/diffloom-demo-eval

This is the training run's own report (the engine's tests check the same things through the nodes).
The files are loaded by diffloom's loader (`load_checkpoint`), so the report also checks the export.
"""
from __future__ import annotations

import os

os.environ.setdefault("GOMP_SPINCOUNT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nodes.demo_model import measure, shapes  # noqa: E402

COLOUR_PROMPTS = [(f"a {c} circle on a white background", c) for c in ("red", "blue", "green", "yellow")] + \
                 [(f"{'an' if c[0] in 'aeiou' else 'a'} {c} square", c) for c in ("blue", "red", "orange", "purple")]


def load_pipeline(checkpoint: Path, controlnet: Path | None = None) -> Any:
    """A diffusers SD pipeline (ControlNet pipeline when `controlnet` is given) on the loaded modules."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionControlNetPipeline, StableDiffusionPipeline  # noqa: PLC0415
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    from nodes.demo_model.architecture import build_controlnet  # noqa: PLC0415
    from nodes.demo_model.controlnet_export import CONTROL_PREFIX  # noqa: PLC0415
    from nodes.models.checkpoint import load_checkpoint  # noqa: PLC0415

    parts = load_checkpoint(checkpoint, dtype=torch.float32)
    scheduler = EulerDiscreteScheduler.from_config(parts.scheduler_config)
    common = dict(vae=parts.vae, text_encoder=parts.text_encoders[0], tokenizer=parts.tokenizers[0], unet=parts.unet,
                  scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if controlnet is None:
        pipe = StableDiffusionPipeline(**common)
    else:
        raw = {k.removeprefix(CONTROL_PREFIX): v.float() for k, v in load_file(str(controlnet)).items()}
        cn = build_controlnet(parts.unet)
        cn.load_state_dict(convert_controlnet_checkpoint(raw, {"layers_per_block": parts.unet.config.layers_per_block}))
        pipe = StableDiffusionControlNetPipeline(controlnet=cn.eval(), **common)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: Any, prompt: str, seed: int, *, negative: str = "", cfg: float = 7.0, steps: int = 20,
             control: Image.Image | None = None, size: int = 64) -> np.ndarray:
    """One picture as a uint8 [H, W, 3] array."""
    extra = {"image": control} if control is not None else {}
    out = pipe(prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=cfg, height=size,
               width=size, generator=torch.Generator().manual_seed(seed), output_type="np", **extra).images[0]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def colour_hits(pipe: Any, seeds: Sequence[int], cfg: float) -> dict[str, Any]:
    """Per colour prompt: how often the dominant foreground colour is the asked one, and the margins."""
    report: dict[str, Any] = {}
    for prompt, colour in COLOUR_PROMPTS:
        readings = [measure.read_colours(generate(pipe, prompt, s, cfg=cfg)) for s in seeds]
        share = [r.foreground.get(colour, 0.0) for r in readings]
        report[prompt] = {"hits": sum(r.dominant == colour for r in readings), "of": len(seeds),
                          "min_share": round(min(share), 3), "mean_share": round(float(np.mean(share)), 3),
                          "dominants": [r.dominant for r in readings],
                          "backgrounds": [r.background for r in readings]}
    return report


def control_positions(pipe: Any, seeds: Sequence[int]) -> dict[str, Any]:
    """With a depth map holding one shape on the left (or right), where does the picture's object land?"""
    report: dict[str, Any] = {}
    for side, x in (("left", 0.25), ("right", 0.75)):
        scene = shapes.Scene(shapes.Background("white", shapes.COLOURS["white"], "plain", 0.13),
                             (shapes.ShapeObject("circle", "red", shapes.COLOURS["red"], "medium", side, x, 0.5, 0.17, 0),))
        control = shapes.depth_map(scene)
        xs = []
        for s in seeds:
            centre = measure.foreground_centroid(generate(pipe, "a red circle on a white background", s, control=control))
            xs.append(round(centre[0], 3) if centre else None)
        report[side] = xs
    return report


def grid(pictures: Sequence[np.ndarray], columns: int) -> Image.Image:
    size = pictures[0].shape[0]
    rows = (len(pictures) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * size, rows * size), "white")
    for i, p in enumerate(pictures):
        sheet.paste(Image.fromarray(p), ((i % columns) * size, (i // columns) * size))
    return sheet


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.demo_model.evaluate", description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/diffloom-demo-eval"))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=7.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    from nodes.demo_model.train import CHECKPOINT_NAME, CONTROLNET_NAME  # noqa: PLC0415

    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    pipe = load_pipeline(args.models / "checkpoints" / CHECKPOINT_NAME)
    report: dict[str, Any] = {"colours": colour_hits(pipe, seeds, args.cfg)}
    prompts = ["a red circle on a white background", "a blue square", "a large green triangle on a black background",
               "a small yellow star at the top left on a blue background", "a purple cross on the right",
               "a red circle on the left and a blue square on the right", "an orange diamond on a striped gray background",
               "a white circle at the bottom on a checkered green background"]
    pictures = [generate(pipe, p, s, cfg=args.cfg) for p in prompts for s in seeds[:8]]
    grid(pictures, 8).resize((8 * 128, len(prompts) * 128), Image.Resampling.NEAREST).save(args.out / "samples.png")
    cn_path = args.models / "controlnet" / CONTROLNET_NAME
    if cn_path.exists():
        report["controlnet_x"] = control_positions(load_pipeline(args.models / "checkpoints" / CHECKPOINT_NAME, cn_path),
                                                   seeds)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    hits = sum(v["hits"] for v in report["colours"].values())
    total = sum(v["of"] for v in report["colours"].values())
    print(json.dumps(report, indent=1))
    print(f"colour hit rate {hits}/{total}; grid in {args.out / 'samples.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
