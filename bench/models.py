"""Models for the benchmarks: tiny and full-size SD1.5 with random weights, seen by diffloom and by diffusers.

Both engines get the very same torch modules: diffloom through a bench-only loader node
(`BenchCheckpoint`, which hands out wrappers registered here) and diffusers through a
`StableDiffusionPipeline` assembled from the modules inside those wrappers. The pipeline is set up
as the parity test in tests/nodes/test_sampler_nodes.py does (Euler, ComfyUI's "simple" schedule as
explicit integer timesteps, "leading" spacing, the same initial noise), so both do the same work.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import log, synchronize

import torch  # noqa: E402  (bench.common set the OpenMP environment first)

from graph.declare import Combo, In, node  # noqa: E402
from graph.nodedef import Result  # noqa: E402
from graph.registry import NodeRegistry  # noqa: E402

_MODELS: dict[str, Any] = {}  # name -> WrappedCheckpoint


def register_model(name: str, wrapped: Any) -> None:
    """Make `wrapped` (MODEL, CLIP, VAE) loadable by BenchCheckpoint under `name`."""
    model, _, vae = wrapped
    if model is not None and vae is not None:
        model.model_options["preview_vae"] = vae  # as CheckpointLoaderSimple does: previews on
    _MODELS[name] = wrapped


def model_names() -> list[str]:
    return sorted(_MODELS) or ["none"]


@node(category="bench", outputs=("MODEL", "CLIP", "VAE"), display_name="Bench Checkpoint")
def BenchCheckpoint(name: str = Combo(model_names)) -> tuple[Any, Any, Any]:
    """Wrappers of a model built in code by the benchmark (no file involved)."""
    try:
        wrapped = _MODELS[name]
    except KeyError:
        raise ValueError(f"BenchCheckpoint: model {name!r} is not one of {sorted(_MODELS)}") from None
    return wrapped.model, wrapped.clip, wrapped.vae


LAST_LATENT: dict[str, torch.Tensor] = {}  # what BenchLatentSink saw last, to check both engines agree


@node(category="bench", output_node=True, display_name="Bench Latent Sink")
def BenchLatentSink(samples: dict[str, Any] = In("LATENT")) -> Result:
    """Ends a graph at the latent (full-size runs leave the VAE decode out of both engines)."""
    LAST_LATENT["samples"] = samples["samples"]
    return Result(ui={"shape": list(samples["samples"].shape)})


def bench_registry() -> NodeRegistry:
    """The built-in nodes plus the bench loader and sink."""
    import nodes  # noqa: PLC0415

    registry = nodes.register_builtin_nodes(NodeRegistry())
    registry.add_all([BenchCheckpoint, BenchLatentSink], origin="bench")
    return registry


def configure_runtime(base: Any) -> Any:
    """Point the process runtime (folders for outputs, previews) at a scratch base directory.

    The thread count is fixed too, so that diffloom samples a small UNet with as many threads as
    diffusers does (it would otherwise take one, see nodes.device.sampling_threads) and the engine
    comparisons measure the engines, not the thread counts; section 7 measures the threads.
    """
    from nodes import device, runtime as rt  # noqa: PLC0415
    from nodes.folders import FolderPaths  # noqa: PLC0415

    current = device.policy()
    if current.threads is None:
        device.configure(str(current.device), threads=torch.get_num_threads())
    return rt.configure(FolderPaths(base, create_dirs=True))


# ---- building models ------------------------------------------------------------------------------------

def tiny_model(name: str = "tiny", seed: int = 0) -> Any:
    """A tiny SD1 (UNet 32/64 wide), wrapped and registered."""
    from nodes.models.tiny import tiny_sd1  # noqa: PLC0415
    from nodes.models.wrappers import wrap_checkpoint  # noqa: PLC0415

    wrapped = wrap_checkpoint(tiny_sd1(seed), name=name)
    register_model(name, wrapped)
    return wrapped


def full_parts(seed: int = 0) -> Any:
    """CheckpointParts of the full SD1.5 architecture with random weights (~15-30 s, ~4.3 GB)."""
    from nodes.models.tiny import (full_sd15_text_encoder_config, full_sd15_unet_config,  # noqa: PLC0415
                                   full_sd15_vae_config, random_parts)

    t0 = time.perf_counter()
    parts = random_parts("sd1", unet_config=full_sd15_unet_config(), vae_config=full_sd15_vae_config(),
                         text_encoder_configs=[full_sd15_text_encoder_config()], seed=seed, name="<full sd15>")
    log(f"  full-size SD1.5 built in {time.perf_counter() - t0:.1f} s")
    return parts


def cache_dir() -> Path:
    """Where the full-size checkpoint files are kept between benchmark runs (DIFFLOOM_BENCH_CACHE)."""
    return Path(os.environ.get("DIFFLOOM_BENCH_CACHE") or Path(tempfile.gettempdir()) / "diffloom-bench-cache")


def full_checkpoint(name: str = "sd15-random-seed0.safetensors", copy_of: str | None = None) -> Path:
    """A full-size SD1.5 single-file checkpoint (fp32, 4.3 GB) with random weights, written once and kept.

    With `copy_of`, the file is a byte copy of that one under another name: a second model that
    shares nothing with the first in memory (its own file, so its own page-cache pages).
    """
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.exists():
        return path
    tmp = path.with_suffix(".partial")
    t0 = time.perf_counter()
    if copy_of is not None:
        shutil.copyfile(full_checkpoint(copy_of), tmp)
    else:
        from nodes.models.ldm_export import save_checkpoint  # noqa: PLC0415

        parts = full_parts()
        save_checkpoint(parts, tmp)
        del parts
        gc.collect()
    os.replace(tmp, path)
    log(f"  wrote {path} in {time.perf_counter() - t0:.1f} s")
    return path


def load_full(path: Path, name: str = "full") -> Any:
    """Load a full-size checkpoint through diffloom's model manager, wrapped and registered."""
    from nodes.models.manager import ModelManager  # noqa: PLC0415

    t0 = time.perf_counter()
    wrapped = ModelManager().load_checkpoint(path)
    register_model(name, wrapped)
    log(f"  loaded {path.name} in {time.perf_counter() - t0:.1f} s")
    return wrapped


def full_model(parts: Any, name: str = "full") -> Any:
    from nodes.models.wrappers import wrap_checkpoint  # noqa: PLC0415

    wrapped = wrap_checkpoint(parts, name=name)
    register_model(name, wrapped)
    return wrapped


# ---- the two engines --------------------------------------------------------------------------------------

def txt2img_prompt(model: str, *, text: str = "a photo of a cat", negative: str = "blurry", seed: int = 42,
                   steps: int = 4, cfg: float = 5.0, size: int = 64, batch: int = 1, decode: bool = True,
                   save: bool = False) -> dict[str, Any]:
    """ComfyUI's default graph on a bench model (euler / simple, like the diffusers side)."""
    prompt: dict[str, Any] = {
        "4": {"class_type": "BenchCheckpoint", "inputs": {"name": model}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": batch}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
    }
    if decode:
        prompt["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}}
        prompt["9"] = ({"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "bench"}}
                       if save else {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}})
    else:
        prompt["9"] = {"class_type": "BenchLatentSink", "inputs": {"samples": ["3", 0]}}
    return prompt


@dataclass
class StepClock:
    """Wall and CPU clocks at every UNet call and step end of one sampler run."""

    step_ends: list[tuple[float, float]] = field(default_factory=list)             # (wall, cpu)
    unet_calls: list[tuple[float, float, float, float]] = field(default_factory=list)  # wall0, wall1, cpu0, cpu1
    first_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # what the UNet got on the first step

    def input_difference(self, other: StepClock) -> float:
        """Largest relative difference between two runs' first UNet inputs, batch order aside (cond/uncond)."""
        worst = 0.0
        for name, mine in self.first_inputs.items():
            theirs = other.first_inputs[name]
            if mine.shape != theirs.shape:
                return float("inf")
            scale = float(theirs.abs().max()) or 1.0
            diff = min(float((mine - theirs).abs().max()), float((mine.flip(0) - theirs).abs().max()))
            worst = max(worst, diff / scale)
        return worst

    def mark_step(self) -> None:
        synchronize()
        self.step_ends.append((time.perf_counter(), time.process_time()))

    def per_step(self, clock: str = "wall") -> float:
        """(last step end - start of the first UNet call) / steps: every step whole, setup excluded."""
        i = 0 if clock == "wall" else 2
        return (self.step_ends[-1][i // 2] - self.unet_calls[0][i]) / len(self.step_ends)

    def unet_per_step(self, clock: str = "wall") -> float:
        i = 0 if clock == "wall" else 2
        return sum(c[i + 1] - c[i] for c in self.unet_calls) / len(self.step_ends)

    def own_per_step(self, clock: str = "wall") -> float:
        """The engine's own time per step: everything in the sampling loop but the UNet calls."""
        return self.per_step(clock) - self.unet_per_step(clock)


class UNetTimer:
    """Forward hooks on a UNet that log each call's start and end into the current StepClock."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.clock: StepClock | None = None
        self._start = (0.0, 0.0)
        self._handles = [unet.register_forward_pre_hook(self._pre, with_kwargs=True),
                         unet.register_forward_hook(self._post)]

    def _pre(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.clock is not None and not self.clock.first_inputs:
            sample = args[0] if args else kwargs["sample"]
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            self.clock.first_inputs = {
                "sample": sample.detach().float().cpu(),
                "timestep": torch.as_tensor(timestep).detach().float().cpu().reshape(-1).expand(sample.shape[0]),
                "encoder_hidden_states": kwargs["encoder_hidden_states"].detach().float().cpu()}
        synchronize()
        self._start = (time.perf_counter(), time.process_time())

    def _post(self, *_: Any) -> None:
        synchronize()
        if self.clock is not None:
            self.clock.unet_calls.append((self._start[0], time.perf_counter(), self._start[1], time.process_time()))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class Diffloom:
    """Runs txt2img prompts through diffloom's executor, with the output cache off (equal work every run)."""

    def __init__(self, registry: NodeRegistry, cache: Any = None) -> None:
        from graph.cache import OutputCache  # noqa: PLC0415
        from graph.executor import Executor  # noqa: PLC0415

        self.executor = Executor(registry, cache if cache is not None else OutputCache("none"))
        self._count = 0

    def run(self, prompt: dict[str, Any], clock: StepClock | None = None) -> Any:
        def emit(event: str, data: dict[str, Any]) -> None:
            if event == "progress" and clock is not None:
                clock.mark_step()

        self._count += 1
        result = self.executor.execute(prompt, f"bench-{self._count}", emit=emit)
        if not result.ok:
            raise RuntimeError(f"diffloom run failed: {result.error}")
        return result


class DiffusersPipe:
    """diffusers' StableDiffusionPipeline on the modules of a bench model, configured to match KSampler."""

    def __init__(self, wrapped: Any) -> None:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: PLC0415

        model, clip, vae = wrapped
        self.model = model
        # Each use() places its module on the compute device in the policy's dtype and leaves it there.
        with model.use() as unet, clip.use() as encoders, vae.use() as vae_module:
            self.vae_module = vae_module
        scheduler = EulerDiscreteScheduler.from_config({**model.scheduler_config, "timestep_spacing": "leading"})
        self.pipe = StableDiffusionPipeline(vae=self.vae_module, text_encoder=encoders[0], tokenizer=clip.tokenizers[0],
                                            unet=unet, scheduler=scheduler, safety_checker=None,
                                            feature_extractor=None, requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)

    def timesteps(self, steps: int) -> list[int]:
        """ComfyUI's "simple" schedule as the integer timesteps diffusers takes."""
        from nodes.guidance import model_sampling  # noqa: PLC0415
        from nodes.sampling import get_sigmas  # noqa: PLC0415

        ms = model_sampling(self.model)
        sigmas = get_sigmas(ms, "simple", steps, 1.0)
        return [int(ms.timestep(s)) for s in sigmas[:-1]]

    def run(self, *, text: str = "a photo of a cat", negative: str = "blurry", seed: int = 42, steps: int = 4,
            cfg: float = 5.0, size: int = 64, batch: int = 1, decode: bool = True,
            clock: StepClock | None = None) -> Any:
        from nodes.sampling import prepare_noise  # noqa: PLC0415

        noise = prepare_noise((batch, 4, size // 8, size // 8), seed)

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if clock is not None:
                clock.mark_step()
            return kwargs

        out = self.pipe(text, negative_prompt=negative, timesteps=self.timesteps(steps), guidance_scale=cfg,
                        latents=noise, output_type="pil" if decode else "latent", height=size, width=size,
                        num_images_per_prompt=1, callback_on_step_end=on_step)
        return out.images


def check_same_work(wrapped: Any, registry: NodeRegistry, *, steps: int = 2, size: int = 64) -> float:
    """Largest difference between diffloom's and diffusers' latents for the same settings, relative to their scale."""
    from nodes import sampler_nodes as S  # noqa: PLC0415
    from nodes import text_nodes as T  # noqa: PLC0415
    from nodes.latent import EmptyLatentImage  # noqa: PLC0415

    model, clip, _ = wrapped
    pos = T.CLIPTextEncode(text="a photo of a cat", clip=clip)
    neg = T.CLIPTextEncode(text="blurry", clip=clip)
    ours = S.KSampler(model=model, seed=42, steps=steps, cfg=5.0, sampler_name="euler", scheduler="simple",
                      positive=pos, negative=neg, latent_image=EmptyLatentImage(width=size, height=size, batch_size=1),
                      denoise=1.0)["samples"]
    pipe = DiffusersPipe(wrapped)
    theirs = (pipe.run(steps=steps, size=size, decode=False) / pipe.vae_module.config.scaling_factor).float()
    ours, theirs = ours.float().cpu(), theirs.cpu()
    return float((ours - theirs).abs().max() / theirs.abs().max())
