"""Train diffloom's demo model on procedural shapes, on the CPU, and write it in the standard file layouts.

    python -m nodes.demo_model.train --out models --work-dir /tmp/diffloom-demo-train

Stages, in order, each resumable from its last saved state in `--work-dir` (rerun the same command):
  vae         AutoencoderKL (f=8, 4 latent channels): L1 + edge + small KL loss; then its latents are
              normalised for SD1's fixed scaling factor.
  unet        UNet2DConditionModel and CLIP text encoder together, on VAE latents: epsilon prediction,
              SD's scaled-linear betas, 10% caption dropout for classifier-free guidance, min-SNR
              weighting, EMA of the weights. Then the SD1 single file is written.
  controlnet  ControlNet on the depth-like shape maps, with the UNet and text encoder frozen; then the
              original-layout ControlNet file is written.
  controlnet_edges
              the same on the shapes' outlines (white edges on black, as an edge detector gives).
Every batch, noise draw and timestep comes from (seed, stage, step), so a resumed run continues
exactly as an uninterrupted one would (on the same machine and thread count). Ctrl-C (or SIGTERM)
saves the state after the current step; `--stop-after N` does so after N steps. The learning rate is
constant after warm-up, so a stage can later be given more steps (`--unet-steps 3000`) and continues
where it stopped, equal to a run that had asked for those steps from the start.
"""
from __future__ import annotations

import os

# Spinning OpenMP threads make small models ~30x slower on shared cores; set before torch loads libgomp.
os.environ.setdefault("GOMP_SPINCOUNT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import asdict, dataclass, fields  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from nodes.demo_model import architecture as arch  # noqa: E402
from nodes.demo_model import shapes  # noqa: E402

CHECKPOINT_NAME = "diffloom-shapes.safetensors"
CONTROLNET_NAME = "diffloom-shapes-depth.safetensors"
EDGES_CONTROLNET_NAME = "diffloom-shapes-edges.safetensors"
STAGES = ("vae", "unet", "controlnet", "controlnet_edges")
_STAGE_IDS = {"vae": 1, "unet": 2, "controlnet": 3, "stats": 4, "eval": 5, "controlnet_edges": 6}
# What each ControlNet stage learns: its kind of hint, the shapes.py function drawing it, its file.
HINTS = {"controlnet": ("depth", shapes.depth_map, CONTROLNET_NAME),
         "controlnet_edges": ("edges", shapes.edge_map, EDGES_CONTROLNET_NAME)}


@dataclass
class Settings:
    """Everything that decides the result (recorded in the files' metadata and the model card)."""

    seed: int = 20261122
    vae_steps: int = 1000
    vae_batch: int = 16
    vae_lr: float = 5e-4
    vae_kl: float = 1e-5
    vae_colour: float = 1.0
    vae_threads: int = 1  # the VAE's many small ops run faster on one thread than synchronising two
    unet_steps: int = 2000
    unet_batch: int = 48
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    controlnet_steps: int = 400
    controlnet_edges_steps: int = 400  # the edge-map ControlNet: same batch, rate and caption dropout
    controlnet_batch: int = 32
    controlnet_lr: float = 1e-3
    controlnet_caption_dropout: float = 0.5
    warmup: int = 50
    stats_samples: int = 512
    threads: int = 2


# ------------------------------------------------------------------------------------ determinism


def step_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    """The numpy generator of one step of one stage (data)."""
    return np.random.default_rng([seed, _STAGE_IDS[stage], step])


def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    """The torch generator of one step of one stage (noise, timesteps, dropout)."""
    mixed = np.random.default_rng([seed, _STAGE_IDS[stage], step, 1]).integers(0, 2**62)
    return torch.Generator().manual_seed(int(mixed))


def lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up, then constant: a stage can be extended (more steps) and equal a run that was longer from the start."""
    return min(1.0, (step + 1) / warmup)


# ------------------------------------------------------------------------------------------- data


@dataclass
class Batch:
    """Pictures in -1..1 [N,3,H,W], hint maps (depth-like or edges) in 0..1 [N,3,H,W], captions."""

    images: torch.Tensor
    maps: torch.Tensor
    captions: list[str]


def make_batch(rng: np.random.Generator, n: int, *,
               hint: Callable[[shapes.Scene, int], Image.Image] | None = None) -> Batch:
    """`n` fresh procedural samples, with each scene's `hint` map (shapes.depth_map, shapes.edge_map) if given."""
    size = arch.IMAGE_SIZE
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    maps = np.empty((n, size, size), dtype=np.uint8) if hint is not None else None
    captions = []
    for i in range(n):
        scene = shapes.sample_scene(rng)
        images[i] = np.asarray(shapes.render(scene, size))
        if maps is not None:
            maps[i] = np.asarray(hint(scene, size))[..., 0]
        captions.append(shapes.caption(scene, rng))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    hints = (torch.from_numpy(maps).float() / 255.0)[:, None].expand(-1, 3, -1, -1).contiguous() \
        if maps is not None else torch.empty(0)
    return Batch(pixels, hints, captions)


class Tokens:
    """The real CLIP tokenizer (padded to 77 as SD1 does) and the compact vocabulary of the captions."""

    def __init__(self) -> None:
        from nodes.models.tokenizers import clip_tokenizer  # noqa: PLC0415

        self.tokenizer = clip_tokenizer("sd1")
        words = " ".join(shapes.vocabulary())
        ids = self.ids([words, ""])
        self.vocab = arch.CompactVocabulary(ids.unique().tolist())

    def ids(self, captions: Sequence[str]) -> torch.Tensor:
        out = self.tokenizer(list(captions), padding="max_length", max_length=arch.MAX_TOKENS, truncation=True,
                             return_tensors="pt")
        return out.input_ids

    def compact(self, captions: Sequence[str]) -> torch.Tensor:
        return self.vocab.compact(self.ids(captions))


# ---------------------------------------------------------------------------------------- state


class Paused(Exception):
    """The run used up its `--stop-after` steps; its state is saved and the same command resumes it."""


class Budget:
    """How many optimiser steps this run may still take (None: no limit), over all stages.

    A SIGINT or SIGTERM (`stop()`) ends the budget too, so Ctrl-C saves the state after the current step.
    """

    def __init__(self, steps: int | None) -> None:
        self.left = steps
        self.stopped = False

    def stop(self, *_: Any) -> None:
        self.stopped = True

    def spend(self) -> bool:
        """Count one step; True when the run must now save and stop."""
        if self.left is not None:
            self.left -= 1
        return self.stopped or (self.left is not None and self.left <= 0)


class Stage:
    """One stage's files in the work folder: the resumable state and the finished result (both atomic)."""

    def __init__(self, work: Path, name: str) -> None:
        self.name = name
        self.work = work
        self.path = work / f"{name}.state.pt"
        self.done = work / f"{name}.done.pt"

    def save(self, path: Path, payload: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> dict[str, Any] | None:
        return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None

    def charge(self, seconds: float) -> None:
        """Add training time to this stage's total in timings.json (kept at every save, so a killed run counts)."""
        record = self.work / "timings.json"
        timings = json.loads(record.read_text()) if record.exists() else {}
        timings[self.name] = round(timings.get(self.name, 0.0) + seconds, 1)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(timings, indent=2) + "\n")
        os.replace(tmp, record)

    def finished(self, steps: int, upstream: dict[str, int]) -> dict[str, Any] | None:
        """The saved result if it is for exactly `steps` steps on the same upstream stages, else None."""
        done = self.load(self.done)
        if done is None or done["step"] != steps:
            return None
        if done.get("upstream", {}) != upstream:
            raise SystemExit(f"{self.done}: was trained on {done.get('upstream')} but the earlier stages are now "
                             f"{upstream}; delete {self.path.name} and {self.done.name} to retrain this stage")
        return done


@torch.no_grad()
def _ema_update(ema: Sequence[torch.Tensor], live: Sequence[torch.Tensor], decay: float) -> None:
    torch._foreach_lerp_(list(ema), list(live), 1.0 - decay)


def _optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, live: Sequence[torch.Tensor],
                    ema: Sequence[torch.Tensor], decay: float, step: int) -> dict[str, float]:
    """Backpropagate, clip, step, and move the EMA weights (decay warms up over the first steps)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(live, 1.0)
    opt.step()
    _ema_update(ema, live, min(decay, (1 + step) / (10 + step)))
    return {"loss": loss.item()}


def _log(work: Path, message: str) -> None:
    tqdm.write(message)
    with (work / "train.log").open("a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {message}\n")


def _train_loop(stage: Stage, total: int, start: int, one_step: Callable[[int], dict[str, float]],
                snapshot: Callable[[int], dict[str, Any]], save_every: int, budget: Budget) -> None:
    """Run steps `start`..`total`-1, saving `snapshot(step)` every `save_every` steps, at the end and on pause."""
    t0 = charged = time.time()
    running: dict[str, float] = {}
    bar = tqdm(range(start, total), initial=start, total=total, desc=stage.name, dynamic_ncols=True, mininterval=2)
    for step in bar:
        values = one_step(step)
        running = {k: v if k not in running else 0.95 * running[k] + 0.05 * v for k, v in values.items()}
        bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, refresh=False)
        pause = budget.spend()
        if (step + 1) % save_every == 0 or step + 1 == total or pause:
            stage.save(stage.path, snapshot(step + 1))
            stage.charge(time.time() - charged)
            charged = time.time()
            summary = " ".join(f"{k} {v:.4f}" for k, v in running.items())
            _log(stage.work, f"{stage.name}: step {step + 1} {summary} ({time.time() - t0:.0f} s this run)")
        if pause and step + 1 < total:
            raise Paused(f"{stage.name} at step {step + 1}")


def _set_lr(opt: torch.optim.Optimizer, base: float, step: int, warmup: int) -> None:
    for group in opt.param_groups:
        group["lr"] = base * lr_factor(step, warmup)


# ------------------------------------------------------------------------------------------ VAE


def _image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def train_vae(settings: Settings, work: Path, save_every: int, budget: Budget) -> nn.Module:
    """Stage 1: the autoencoder; returns it with its latents normalised for SD1's scaling factor.

    Besides reconstruction (L1 and image gradients) and a small KL term, the first three latent
    channels are pulled towards the 8x8 average of the picture's RGB: a deep GroupNorm network is slow
    to find colours on its own, and a latent that is a small picture is also easy to diffuse.
    """
    from nodes.demo_model.export import fold_latent_normalisation, latent_statistics  # noqa: PLC0415

    stage = Stage(work, "vae")
    torch.manual_seed(settings.seed)
    vae = arch.build_vae()
    if (done := stage.finished(settings.vae_steps, {})) is not None:
        vae.load_state_dict(done["model"])
        return vae.eval().requires_grad_(False)
    vae.train()
    with torch.no_grad():
        # Start with a nearly deterministic posterior: Adam moves a log-variance bias by ~lr per step, so
        # from 0 (std 1, noise as large as the signal) it would take thousands of steps to get there.
        vae.quant_conv.bias[arch.LATENT_CHANNELS:] = -8.0
    opt = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    start = 0
    if (state := stage.load(stage.path)) is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        _log(work, f"vae: resuming at step {start}")

    def one_step(step: int) -> dict[str, float]:
        _set_lr(opt, settings.vae_lr, step, settings.warmup)
        batch = make_batch(step_rng(settings.seed, "vae", step), settings.vae_batch)
        gen = step_generator(settings.seed, "vae", step)
        posterior = vae.encode(batch.images).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        out = vae.decode(z).sample
        rec = (out - batch.images).abs().mean()
        gy, gx = _image_gradients(out)
        ty, tx = _image_gradients(batch.images)
        edge = (gy - ty).abs().mean() + (gx - tx).abs().mean()
        colour = (posterior.mean[:, :3] - F.avg_pool2d(batch.images, 8)).abs().mean()
        kl = posterior.kl().mean() / z[0].numel()
        loss = rec + 0.5 * edge + settings.vae_colour * colour + settings.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        return {"rec": rec.item(), "edge": edge.item(), "colour": colour.item(), "kl": kl.item()}

    previous = torch.get_num_threads()
    torch.set_num_threads(settings.vae_threads)
    try:
        _train_loop(stage, settings.vae_steps, start, one_step,
                    lambda step: {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step},
                    save_every, budget)
    finally:
        torch.set_num_threads(previous)
    vae.eval().requires_grad_(False)
    # Normalise the latents (per channel) over fresh samples, then keep the result.
    with torch.inference_mode():
        batch = make_batch(step_rng(settings.seed, "stats", 0), settings.stats_samples)
        means = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in batch.images.split(64)])
    mean, std = latent_statistics(means)
    fold_latent_normalisation(vae, mean, std)
    _log(work, f"vae: latent mean {[round(v, 3) for v in mean.tolist()]} std {[round(v, 3) for v in std.tolist()]}")
    stage.save(stage.done, {"model": vae.state_dict(), "mean": mean, "std": std, "step": settings.vae_steps})
    return vae


# ----------------------------------------------------------------------------------------- UNet


def _noise_schedule() -> Any:
    from diffusers import DDPMScheduler  # noqa: PLC0415

    from nodes.models.checkpoint import scheduler_config  # noqa: PLC0415

    return DDPMScheduler.from_config(scheduler_config("epsilon"))


def _diffusion_loss(scheduler: Any, latents: torch.Tensor, gen: torch.Generator,
                    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], gamma: float) -> torch.Tensor:
    """Epsilon-prediction loss at uniform random timesteps, weighted by min(SNR, gamma) / SNR."""
    n = latents.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=gen)
    noise = torch.randn(latents.shape, generator=gen)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = predict(noisy, t)
    alphas = scheduler.alphas_cumprod[t]
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=gamma) / snr
    per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


def _encode(vae: nn.Module, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
    return z * arch.SD1_SCALING


def _drop_captions(captions: list[str], p: float, gen: torch.Generator) -> list[str]:
    keep = torch.rand(len(captions), generator=gen) >= p
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


def train_unet(settings: Settings, work: Path, vae: nn.Module, tokens: Tokens,
               save_every: int, budget: Budget) -> tuple[nn.Module, nn.Module]:
    """Stage 2: UNet and text encoder together; returns their EMA weights (text encoder compact)."""
    stage = Stage(work, "unet")
    upstream = {"vae": settings.vae_steps}
    if (done := stage.finished(settings.unet_steps, upstream)) is not None:
        unet, te = arch.build_unet(), arch.build_text_encoder(len(tokens.vocab))
        unet.load_state_dict(done["unet"])
        te.load_state_dict(done["te"])
        return unet.eval().requires_grad_(False), te.eval().requires_grad_(False)
    torch.manual_seed(settings.seed + 1)
    unet, te = arch.build_unet().train(), arch.build_text_encoder(len(tokens.vocab)).train()
    ema_unet, ema_te = copy.deepcopy(unet).eval().requires_grad_(False), copy.deepcopy(te).eval().requires_grad_(False)
    live = list(unet.parameters()) + list(te.parameters())
    ema = list(ema_unet.parameters()) + list(ema_te.parameters())
    opt = torch.optim.AdamW(live, lr=settings.unet_lr, weight_decay=1e-2)
    start = 0
    if (state := stage.load(stage.path)) is not None:
        if state.get("upstream", {}) != upstream:
            raise SystemExit(f"{stage.path}: started on {state.get('upstream')}, now {upstream}; delete it to retrain")
        for module, key in ((unet, "unet"), (te, "te"), (ema_unet, "ema_unet"), (ema_te, "ema_te")):
            module.load_state_dict(state[key])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        _log(work, f"unet: resuming at step {start}")
    scheduler = _noise_schedule()

    def one_step(step: int) -> dict[str, float]:
        _set_lr(opt, settings.unet_lr, step, settings.warmup)
        batch = make_batch(step_rng(settings.seed, "unet", step), settings.unet_batch)
        gen = step_generator(settings.seed, "unet", step)
        latents = _encode(vae, batch.images, gen)
        ids = tokens.compact(_drop_captions(batch.captions, settings.caption_dropout, gen))
        context = te(ids).last_hidden_state
        loss = _diffusion_loss(scheduler, latents, gen, lambda x, t: unet(x, t, context).sample,
                               settings.min_snr_gamma)
        return _optimiser_step(opt, loss, live, ema, settings.ema_decay, step)

    def snapshot(step: int) -> dict[str, Any]:
        return {"unet": unet.state_dict(), "te": te.state_dict(), "ema_unet": ema_unet.state_dict(),
                "ema_te": ema_te.state_dict(), "opt": opt.state_dict(), "step": step, "upstream": upstream}

    _train_loop(stage, settings.unet_steps, start, one_step, snapshot, save_every, budget)
    stage.save(stage.done, {"unet": ema_unet.state_dict(), "te": ema_te.state_dict(), "step": settings.unet_steps,
                            "upstream": upstream})
    return ema_unet, ema_te


# ----------------------------------------------------------------------------------- ControlNet


def train_controlnet(settings: Settings, work: Path, vae: nn.Module, unet: nn.Module, te: nn.Module,
                     tokens: Tokens, save_every: int, budget: Budget, name: str = "controlnet") -> nn.Module:
    """Stages 3 and 4: a ControlNet on depth-like maps (`controlnet`) or on shape outlines (`controlnet_edges`),
    UNet and text encoder frozen; returns its EMA weights."""
    stage = Stage(work, name)
    hint = HINTS[name][1]
    steps = settings.controlnet_steps if name == "controlnet" else settings.controlnet_edges_steps
    upstream = {"vae": settings.vae_steps, "unet": settings.unet_steps}
    if (done := stage.finished(steps, upstream)) is not None:
        controlnet = arch.build_controlnet(unet)
        controlnet.load_state_dict(done["controlnet"])
        return controlnet.eval().requires_grad_(False)
    torch.manual_seed(settings.seed + _STAGE_IDS[name] - 1)  # + 2 for the depth ControlNet, as it always was
    controlnet = arch.build_controlnet(unet).train()
    ema_cn = copy.deepcopy(controlnet).eval().requires_grad_(False)
    live, ema = list(controlnet.parameters()), list(ema_cn.parameters())
    opt = torch.optim.AdamW(live, lr=settings.controlnet_lr, weight_decay=0.0)
    start = 0
    if (state := stage.load(stage.path)) is not None:
        if state.get("upstream", {}) != upstream:
            raise SystemExit(f"{stage.path}: started on {state.get('upstream')}, now {upstream}; delete it to retrain")
        controlnet.load_state_dict(state["controlnet"])
        ema_cn.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        _log(work, f"{name}: resuming at step {start}")
    scheduler = _noise_schedule()
    unet.eval().requires_grad_(False)
    te.eval().requires_grad_(False)

    def one_step(step: int) -> dict[str, float]:
        _set_lr(opt, settings.controlnet_lr, step, settings.warmup)
        batch = make_batch(step_rng(settings.seed, name, step), settings.controlnet_batch, hint=hint)
        gen = step_generator(settings.seed, name, step)
        latents = _encode(vae, batch.images, gen)
        with torch.no_grad():
            ids = tokens.compact(_drop_captions(batch.captions, settings.controlnet_caption_dropout, gen))
            context = te(ids).last_hidden_state

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            down, mid = controlnet(x, t, context, controlnet_cond=batch.maps, return_dict=False)
            return unet(x, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample

        loss = _diffusion_loss(scheduler, latents, gen, predict, settings.min_snr_gamma)
        return _optimiser_step(opt, loss, live, ema, settings.ema_decay, step)

    def snapshot(step: int) -> dict[str, Any]:
        return {"controlnet": controlnet.state_dict(), "ema": ema_cn.state_dict(), "opt": opt.state_dict(),
                "step": step, "upstream": upstream}

    _train_loop(stage, steps, start, one_step, snapshot, save_every, budget)
    stage.save(stage.done, {"controlnet": ema_cn.state_dict(), "step": steps,
                            "upstream": upstream})
    return ema_cn


# ---------------------------------------------------------------------------------------- output


# Stability AI's ModelSpec keys, which tools (diffloom's editor among them) read to set up a model:
# the editor's default graph takes its size and example prompt from them.
MODELSPEC: dict[str, str] = {
    "modelspec.sai_model_spec": "1.0.0",
    "modelspec.architecture": "stable-diffusion-v1",
    "modelspec.implementation": "https://github.com/Stability-AI/stablediffusion",
    "modelspec.resolution": "64x64",
    "modelspec.prediction_type": "epsilon",
    "modelspec.license": "Apache-2.0",
    "modelspec.author": "diffloom",
    "modelspec.usage_hint": "64x64 pictures of coloured shapes: prompts like 'a small blue star at the top left'",
    "diffloom.example_prompt": "a red circle on a white background",
}


def _metadata(settings: Settings, what: str, title: str) -> dict[str, str]:
    return {**MODELSPEC, "modelspec.title": title, "modelspec.description": "see nodes/demo_model/MODEL_CARD.md",
            "diffloom.model": what, "diffloom.training": json.dumps(asdict(settings)),
            "diffloom.trainer": "python -m nodes.demo_model.train", "license": "Apache-2.0"}


def write_files(settings: Settings, out: Path, vae: nn.Module, unet: nn.Module, te: nn.Module, tokens: Tokens,
                controlnets: dict[str, nn.Module]) -> list[Path]:
    """The SD1 checkpoint (and the ControlNets trained, by stage name) under `out`/checkpoints and `out`/controlnet."""
    from nodes.demo_model.controlnet_export import save_controlnet  # noqa: PLC0415
    from nodes.demo_model.export import save_sd1_checkpoint  # noqa: PLC0415

    full_te = arch.expand_text_encoder(te, tokens.vocab)
    written = [save_sd1_checkpoint(unet, vae, full_te, out / "checkpoints" / CHECKPOINT_NAME,
                                   metadata=_metadata(settings, "diffloom-shapes", "diffloom shapes (demo model)"))]
    for name, controlnet in controlnets.items():
        kind, _, filename = HINTS[name]
        written.append(save_controlnet(controlnet, out / "controlnet" / filename, dtype=torch.float16,
                                       metadata=_metadata(settings, f"diffloom-shapes-{kind}",
                                                          f"diffloom shapes {kind} ControlNet (demo model)")))
    return written


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(prog="python -m nodes.demo_model.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models"), help="models folder (checkpoints/, controlnet/)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/diffloom-demo-train"),
                        help="where resumable training state, logs and sample grids go")
    parser.add_argument("--until", choices=STAGES, default=STAGES[-1], help="last stage to run")
    parser.add_argument("--save-every", type=int, default=50, help="steps between resumable saves")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="save and stop after this many steps in this run (rerun the same command to resume)")
    defaults = Settings()
    for f in fields(Settings):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name))
    args = parser.parse_args(argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    return args, settings


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = parse_args(argv)
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run(args, settings)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    work: Path = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    recorded = work / "settings.json"
    # Step counts may grow between runs (the learning rate is constant after warm-up); nothing else may change.
    fixed = {k: v for k, v in asdict(settings).items() if not k.endswith("_steps")}
    if recorded.exists():
        before = json.loads(recorded.read_text())
        if {k: v for k, v in before.items() if not k.endswith("_steps")} != fixed:
            raise SystemExit(f"{work}: holds a run with other settings ({recorded}); use another --work-dir or the "
                             "same settings to resume")
    recorded.write_text(json.dumps(asdict(settings), indent=2) + "\n")
    budget = Budget(args.stop_after)
    handlers = {sig: signal.signal(sig, budget.stop) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        vae = train_vae(settings, work, args.save_every, budget)
        if args.until == "vae":
            return 0
        tokens = Tokens()
        unet, te = train_unet(settings, work, vae, tokens, args.save_every, budget)
        controlnets = {name: train_controlnet(settings, work, vae, unet, te, tokens, args.save_every, budget, name)
                       for name in STAGES[2:STAGES.index(args.until) + 1]}
    except Paused as paused:
        _log(work, f"paused: {paused}; run the same command again to resume")
        return 3
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    for path in write_files(settings, args.out, vae, unet, te, tokens, controlnets):
        _log(work, f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    timings = json.loads((work / "timings.json").read_text()) if (work / "timings.json").exists() else {}
    _log(work, f"training wall times (s, summed over resumed runs): {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
