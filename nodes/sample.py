"""Running a sampler on a MODEL: start a run, advance it by steps, finish it into a LATENT.

KSampler, SamplerCustom and the step-level nodes all go through these three functions, so a chain
of step nodes gives exactly what one sampler call gives. A run (`SamplingRun`, the SAMPLER_STATE
type) holds the sampler's state plus what inpainting needs between steps; it is never changed in
place.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from graph.context import progress

from . import device as devices
from .guidance import Guider, model_sampling
from .latent import latent_channels_fit
from .models.wrappers import ModelWrapper, module_nbytes
from .preview import preview_image
from .sampling import Sampler, SamplerState, check_seed, get_sampler, prepare_noise

Latent = dict[str, Any]


@dataclass(frozen=True)
class SamplerChoice:
    """The SAMPLER type: a sampler name and its options; a fresh sampler object is built per run."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def build(self) -> Sampler:
        return get_sampler(self.name, **dict(self.options))


@dataclass(frozen=True)
class SamplingRun:
    """SAMPLER_STATE: a sampler part-way through its schedule, and the latent it started from."""

    sampler: SamplerChoice
    state: SamplerState
    latent: Latent                    # the LATENT dict the run started from (raw VAE space)
    latent_image: torch.Tensor        # its samples in the model's space, for inpainting
    noise: torch.Tensor               # the initial noise, for inpainting
    mask: torch.Tensor | None         # the noise mask at latent size, 1 = denoise here
    seed: int

    @property
    def done(self) -> bool:
        return self.state.done


def _noise_mask(latent: Latent, shape: torch.Size) -> torch.Tensor | None:
    mask = latent.get("noise_mask")
    if mask is None:
        return None
    mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
    mask = F.interpolate(mask, size=shape[-2:], mode="bilinear", align_corners=False)
    mask = mask.expand(-1, shape[1], -1, -1)
    if mask.shape[0] < shape[0]:
        mask = mask.repeat((shape[0] + mask.shape[0] - 1) // mask.shape[0], 1, 1, 1)[:shape[0]]
    return mask


def start(model: ModelWrapper, latent: Latent, sigmas: torch.Tensor, sampler: SamplerChoice, seed: int,
          *, add_noise: bool = True, noise: torch.Tensor | None = None) -> SamplingRun:
    """Noise the latent to the first sigma and set the sampler up (ComfyUI's noise and scaling)."""
    seed = check_seed(seed, "noise_seed")
    ms = model_sampling(model)
    samples = latent_channels_fit(latent["samples"].float(), model.latent_channels)
    if noise is None:
        noise = (prepare_noise(samples.shape, seed, latent.get("batch_index")) if add_noise
                 else torch.zeros_like(samples))
    device = devices.compute_device()
    latent_image = model.process_latent_in(samples)
    sigmas = sigmas.float().cpu()
    built = sampler.build()
    if len(sigmas) < 2:  # nothing to sample: the run is already finished
        state = built.init_state(latent_image.to(device), sigmas if len(sigmas) else torch.zeros(1), seed)
        return SamplingRun(sampler, state, latent, latent_image, noise, _noise_mask(latent, samples.shape), seed)
    x = ms.noise_scaling(sigmas[0], noise, latent_image, max_denoise=ms.is_max_denoise(sigmas[0]))
    mask = _noise_mask(latent, samples.shape)
    state = built.init_state(x.to(device), sigmas, seed)
    return SamplingRun(sampler, state, latent, latent_image, noise, mask, seed)


def advance(run: SamplingRun, guider: Guider, steps: int | None = None, *, node_id: str | None = None,
            on_step: Callable[[int, int], None] | None = None) -> SamplingRun:
    """Run `steps` more sigma intervals (all that are left if None) with this guider."""
    if run.done:
        return run
    state = run.state
    end = state.total_steps if steps is None else min(state.total_steps, state.step_index + steps)
    model = guider.model
    ms = model_sampling(model)
    sampler = run.sampler.build()
    with model.use() as unet:
        param = next(unet.parameters())
        denoise = guider.denoiser(devices.prepare_unet(unet), ms, state.x.shape, param.device, param.dtype)
        if run.mask is not None:
            denoise = _inpainting(denoise, run, ms, param.device)

        def callback(index: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
            preview = preview_image(model, denoised)
            progress(index + 1, total, preview, node_id=node_id)
            if on_step is not None:
                on_step(index + 1, total)

        with torch.inference_mode(), devices.sampling_threads(module_nbytes(unet)):
            state = sampler.run(denoise, state, end=end, callback=callback)
    return replace(run, state=state)


def _inpainting(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], run: SamplingRun, ms: Any,
                device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Keep the unmasked area on the input latent (noised to the current sigma) at every step."""
    mask = run.mask.to(device)
    keep = 1.0 - mask
    latent_image = run.latent_image.to(device)
    noise = run.noise.to(device)

    def masked(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        noised = ms.noise_scaling(sigma.reshape(-1, 1, 1, 1), noise, latent_image, max_denoise=False)
        out = denoise(x * mask + noised * keep, sigma)
        return out * mask + latent_image * keep

    return masked


def finish(run: SamplingRun, model: ModelWrapper) -> tuple[Latent, Latent]:
    """The LATENT the run produced and the LATENT of its last x0 prediction (raw VAE space, on the CPU)."""
    ms = model_sampling(model)
    state = run.state
    x = state.x.float().cpu()
    sigma_last = state.sigmas[min(state.step_index, state.total_steps)]
    samples = model.process_latent_out(ms.inverse_noise_scaling(sigma_last, x))
    out = dict(run.latent)
    out["samples"] = samples
    denoised = dict(run.latent)
    denoised["samples"] = (model.process_latent_out(state.denoised.float().cpu())
                           if state.denoised is not None else samples)
    return out, denoised


def sample(guider: Guider, latent: Latent, sigmas: torch.Tensor, sampler: SamplerChoice, seed: int, *,
           add_noise: bool = True, noise: torch.Tensor | None = None) -> tuple[Latent, Latent]:
    """A whole sampler run: start, every step, finish."""
    run = start(guider.model, latent, sigmas, sampler, seed, add_noise=add_noise, noise=noise)
    run = advance(run, guider)
    return finish(run, guider.model)


def ksampler_sigmas(model: ModelWrapper, steps: int, scheduler: str, sampler_name: str, denoise: float) -> torch.Tensor:
    from .sampling import get_sigmas  # noqa: PLC0415

    return get_sigmas(model_sampling(model), scheduler, steps, denoise, sampler_name)
