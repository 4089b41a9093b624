"""Sampling nodes: KSampler and KSamplerAdvanced, the SamplerCustom family, and step-level sampling.

The step-level nodes (SamplingStart, SamplingSteps, SamplingResult) split one sampler run into
steps, so a prompt, model or ControlNet can change between them; chained, they give exactly the
result of one KSampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from graph.declare import Boolean, Combo, Float, In, Int, node
from graph.schema import INT_MAX, Output

from .guidance import Guider, model_sampling
from .models.wrappers import ModelWrapper
from .sample import SamplerChoice, SamplingRun, advance, finish, ksampler_sigmas, sample, start
from .sampling import SAMPLER_NAMES, SCHEDULER_NAMES, get_sigmas, prepare_noise
from .sampling.schedules import karras

Latent = dict[str, Any]
Conditioning = list[list[Any]]

SEED = dict(min=0, max=INT_MAX, control_after_generate=True)


@dataclass(frozen=True)
class Noise:
    """The NOISE type: initial noise from a seed, or none at all."""

    seed: int
    disabled: bool = False

    def generate_noise(self, latent: Latent) -> torch.Tensor:
        samples = latent["samples"]
        if self.disabled:
            return torch.zeros_like(samples, dtype=torch.float32)
        return prepare_noise(samples.shape, self.seed, latent.get("batch_index"))


@node(category="sampling", outputs=Output("LATENT", tooltip="The denoised latent."),
      description="Uses the provided model, positive and negative conditioning to denoise the latent image.")
def KSampler(model: ModelWrapper = In("MODEL", tooltip="The model used for denoising the input latent."),
             seed: int = Int(0, **SEED, tooltip="The random seed used for creating the noise."),
             steps: int = Int(20, min=1, max=10000, tooltip="The number of steps used in the denoising process."),
             cfg: float = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                                tooltip="Classifier-free guidance scale; 1 skips the unconditional pass."),
             sampler_name: str = Combo(SAMPLER_NAMES, tooltip="The algorithm used when sampling."),
             scheduler: str = Combo(SCHEDULER_NAMES, tooltip="How the noise levels are spaced over the steps."),
             positive: Conditioning = In("CONDITIONING", tooltip="What to include in the image."),
             negative: Conditioning = In("CONDITIONING", tooltip="What to exclude from the image."),
             latent_image: Latent = In("LATENT", tooltip="The latent image to denoise."),
             denoise: float = Float(1.0, min=0.0, max=1.0, step=0.01,
                                    tooltip="How much of the latent is replaced: 1 for txt2img, less for img2img.")) -> Latent:
    """Denoise a latent with a model, positive and negative conditioning."""
    sigmas = ksampler_sigmas(model, steps, scheduler, sampler_name, denoise)
    out, _ = sample(Guider(model, positive, negative, cfg), latent_image, sigmas, SamplerChoice(sampler_name), seed)
    return out


@node(category="sampling", outputs="LATENT", display_name="KSampler (Advanced)")
def KSamplerAdvanced(model: ModelWrapper = In("MODEL"), add_noise: str = Combo(["enable", "disable"]),
                     noise_seed: int = Int(0, **SEED), steps: int = Int(20, min=1, max=10000),
                     cfg: float = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                     sampler_name: str = Combo(SAMPLER_NAMES), scheduler: str = Combo(SCHEDULER_NAMES),
                     positive: Conditioning = In("CONDITIONING"), negative: Conditioning = In("CONDITIONING"),
                     latent_image: Latent = In("LATENT"), start_at_step: int = Int(0, min=0, max=10000),
                     end_at_step: int = Int(10000, min=0, max=10000),
                     return_with_leftover_noise: str = Combo(["disable", "enable"])) -> Latent:
    """Run only steps start_at_step..end_at_step of a schedule, with or without adding noise."""
    sigmas = ksampler_sigmas(model, steps, scheduler, sampler_name, 1.0)
    if end_at_step < len(sigmas) - 1:
        sigmas = sigmas[:end_at_step + 1]
        if return_with_leftover_noise == "disable":
            sigmas = sigmas.clone()
            sigmas[-1] = 0.0
    if start_at_step >= len(sigmas) - 1:
        return latent_image
    sigmas = sigmas[start_at_step:]
    out, _ = sample(Guider(model, positive, negative, cfg), latent_image, sigmas, SamplerChoice(sampler_name),
                    noise_seed, add_noise=add_noise == "enable")
    return out


@node(category="sampling/custom_sampling", outputs=(Output("LATENT", name="output"),
                                                    Output("LATENT", name="denoised_output")))
def SamplerCustom(model: ModelWrapper = In("MODEL"), add_noise: bool = Boolean(True),
                  noise_seed: int = Int(0, **SEED), cfg: float = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                  positive: Conditioning = In("CONDITIONING"), negative: Conditioning = In("CONDITIONING"),
                  sampler: SamplerChoice = In("SAMPLER"), sigmas: torch.Tensor = In("SIGMAS"),
                  latent_image: Latent = In("LATENT")) -> tuple[Latent, Latent]:
    """Sample with a chosen sampler object and sigma schedule."""
    return sample(Guider(model, positive, negative, cfg), latent_image, sigmas, sampler, noise_seed,
                  add_noise=add_noise)


@node(category="sampling/custom_sampling", outputs=(Output("LATENT", name="output"),
                                                    Output("LATENT", name="denoised_output")))
def SamplerCustomAdvanced(noise: Noise = In("NOISE"), guider: Guider = In("GUIDER"),
                          sampler: SamplerChoice = In("SAMPLER"), sigmas: torch.Tensor = In("SIGMAS"),
                          latent_image: Latent = In("LATENT")) -> tuple[Latent, Latent]:
    """Sample with separate noise, guider, sampler and sigmas."""
    return sample(guider, latent_image, sigmas, sampler, noise.seed, noise=noise.generate_noise(latent_image))


@node(category="sampling/custom_sampling/noise", outputs="NOISE")
def RandomNoise(noise_seed: int = Int(0, **SEED)) -> Noise:
    """Initial noise from a seed (CPU generator, the same on every device)."""
    return Noise(noise_seed)


@node(category="sampling/custom_sampling/noise", outputs="NOISE")
def DisableNoise() -> Noise:
    """No initial noise (to continue a partly denoised latent)."""
    return Noise(0, disabled=True)


@node(category="sampling/custom_sampling/schedulers", outputs="SIGMAS")
def BasicScheduler(model: ModelWrapper = In("MODEL"), scheduler: str = Combo(SCHEDULER_NAMES),
                   steps: int = Int(20, min=1, max=10000),
                   denoise: float = Float(1.0, min=0.0, max=1.0, step=0.01)) -> torch.Tensor:
    """The sigma schedule of a model for a number of steps."""
    return get_sigmas(model_sampling(model), scheduler, steps, denoise)


@node(category="sampling/custom_sampling/schedulers", outputs="SIGMAS")
def KarrasScheduler(steps: int = Int(20, min=1, max=10000),
                    sigma_max: float = Float(14.614642, min=0.0, max=5000.0, step=0.01, round=False),
                    sigma_min: float = Float(0.0291675, min=0.0, max=5000.0, step=0.01, round=False),
                    rho: float = Float(7.0, min=0.0, max=100.0, step=0.01, round=False)) -> torch.Tensor:
    """Karras et al.'s schedule between two sigmas."""
    # karras() only reads sigma_min and sigma_max from its model sampling.
    return karras(SimpleNamespace(sigma_min=sigma_min, sigma_max=sigma_max), steps, rho)  # type: ignore[arg-type]


@node(category="sampling/custom_sampling/samplers", outputs="SAMPLER")
def KSamplerSelect(sampler_name: str = Combo(SAMPLER_NAMES)) -> SamplerChoice:
    """Choose a sampler algorithm by name."""
    return SamplerChoice(sampler_name)


@node(category="sampling/custom_sampling/guiders", outputs="GUIDER")
def CFGGuider(model: ModelWrapper = In("MODEL"), positive: Conditioning = In("CONDITIONING"),
              negative: Conditioning = In("CONDITIONING"),
              cfg: float = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)) -> Guider:
    """Classifier-free guidance between a positive and a negative conditioning."""
    return Guider(model, positive, negative, cfg)


@node(category="sampling/custom_sampling/guiders", outputs="GUIDER")
def BasicGuider(model: ModelWrapper = In("MODEL"), conditioning: Conditioning = In("CONDITIONING")) -> Guider:
    """Guidance by one conditioning, without an unconditional pass."""
    return Guider(model, conditioning, None, 1.0)


# ---- step-level sampling -------------------------------------------------------------------------------

@node(category="sampling/steps", outputs=Output("SAMPLER_STATE", name="state"))
def SamplingStart(model: ModelWrapper = In("MODEL", tooltip="Gives the noise schedule."),
                  seed: int = Int(0, **SEED), steps: int = Int(20, min=1, max=10000),
                  sampler_name: str = Combo(SAMPLER_NAMES), scheduler: str = Combo(SCHEDULER_NAMES),
                  latent_image: Latent = In("LATENT"),
                  denoise: float = Float(1.0, min=0.0, max=1.0, step=0.01)) -> SamplingRun:
    """Noise a latent and set up a sampler run, to be advanced by SamplingSteps nodes."""
    sigmas = ksampler_sigmas(model, steps, scheduler, sampler_name, denoise)
    return start(model, latent_image, sigmas, SamplerChoice(sampler_name), seed)


@node(category="sampling/steps", outputs=Output("SAMPLER_STATE", name="state"))
def SamplingSteps(model: ModelWrapper = In("MODEL"), positive: Conditioning = In("CONDITIONING"),
                  negative: Conditioning = In("CONDITIONING"),
                  cfg: float = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                  state: SamplingRun = In("SAMPLER_STATE"),
                  steps: int = Int(1, min=0, max=10000, tooltip="How many steps to run; 0 runs all that are left.")
                  ) -> SamplingRun:
    """Advance a sampler run by some steps with this model and conditioning."""
    return advance(state, Guider(model, positive, negative, cfg), steps or None)


@node(category="sampling/steps", outputs=(Output("LATENT", name="output"), Output("LATENT", name="denoised_output")))
def SamplingResult(model: ModelWrapper = In("MODEL"), state: SamplingRun = In("SAMPLER_STATE")) -> tuple[Latent, Latent]:
    """The latent of a sampler run (finished or not) and its last denoised prediction."""
    return finish(state, model)
