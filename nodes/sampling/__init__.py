"""Sampling mathematics for the Stable Diffusion family: sigma tables, schedules, samplers, seeded noise.

Torch only: nothing here knows about the graph engine, conditioning, CFG or the UNet. Callers wrap
their model into a *denoiser* and drive the samplers below; names and numerics follow ComfyUI.

Conventions
-----------
* **Sigma space.** Latents live in k-diffusion's sigma space: ``x = x0 + sigma * eps``. A sampler only
  ever calls ``denoise(x, sigma) -> x0`` where ``x`` is [B, ...] and ``sigma`` is a float32 tensor of
  shape [B] on x's device. The caller builds it from a UNet with :class:`DiscreteModelSampling`::

      def denoise(x, sigma):
          t = ms.timestep(sigma)                       # what ComfyUI feeds the UNet: nearest table index
          out = unet(ms.calculate_input(sigma, x), t, ...)   # c_in = 1/sqrt(sigma^2 + 1); CFG goes here
          return ms.calculate_denoised(sigma, out, x)  # epsilon or v-prediction -> x0

  (``ms.sigma_to_timestep`` gives the fractional timestep instead, as diffusers' k-schedulers do; ComfyUI
  parity needs ``ms.timestep``.)
* **Sigmas** are a 1-D float32 CPU tensor, descending, ending in 0 (only the last entry may be 0).

Model sampling (``model_sampling``)
-----------------------------------
``DiscreteModelSampling.from_config(diffusers_scheduler_config)`` (beta_start, beta_end, beta_schedule
"scaled_linear"/"linear", num_train_timesteps, prediction_type "epsilon"/"v_prediction") or
``DiscreteModelSampling(betas, prediction_type)``. Attributes: ``sigmas`` (float32 [1000], ascending in
timestep), ``log_sigmas``, ``alphas_cumprod`` (float64), ``sigma_min``, ``sigma_max``, ``prediction_type``,
``num_train_timesteps``. Methods: ``timestep(sigma)`` (nearest index, float), ``sigma_to_timestep(sigma)``
(fractional, log-sigma interpolation), ``sigma(timestep)``, ``percent_to_sigma(p)``, ``calculate_input``,
``calculate_denoised``, ``is_max_denoise(sigma)``, ``noise_scaling(sigma, noise, latent, max_denoise)`` and
``inverse_noise_scaling(sigma, latent)``. The start latent of a sampler run is, as in ComfyUI's KSampler::

      x = ms.noise_scaling(sigmas[0], noise, latent, max_denoise=ms.is_max_denoise(sigmas[0]))
      ...sample...
      latent_out = ms.inverse_noise_scaling(sigmas[-1], x)

Schedules (``schedules``, ``registry``)
---------------------------------------
``SCHEDULER_NAMES`` = simple, sgm_uniform, karras, exponential, ddim_uniform, beta, normal,
linear_quadratic, kl_optimal; each ``SCHEDULERS[name](model_sampling, steps) -> sigmas``, ``steps + 1``
long except where ComfyUI's own rule gives another length: ``ddim_uniform`` (stride ``1000 // steps``,
e.g. 32 sigmas for 30 steps) and ``beta`` (repeated table indices dropped, only for very many steps).
``get_sigmas(model_sampling, scheduler_name, steps, denoise=1.0, sampler_name=None)`` applies ComfyUI's
conventions: ``denoise < 1`` runs ``int(steps / denoise)`` steps and keeps the last ``steps + 1``;
``denoise <= 0`` gives an empty tensor; with a ``sampler_name`` whose ``discard_penultimate_sigma`` is set
(dpm_2, dpm_2_ancestral, uni_pc, uni_pc_bh2) one extra step is computed and the penultimate sigma
dropped (KSampler; pass ``sampler_name=None`` for BasicScheduler, which does not do this).

Samplers (``samplers``, ``registry``)
-------------------------------------
``SAMPLER_NAMES`` (ComfyUI's order): euler, euler_ancestral, heun, dpm_2, dpm_2_ancestral, lms,
dpmpp_2s_ancestral, dpmpp_sde, dpmpp_sde_gpu, dpmpp_2m, dpmpp_2m_sde, dpmpp_2m_sde_gpu,
dpmpp_2m_sde_heun, dpmpp_2m_sde_heun_gpu, dpmpp_3m_sde, dpmpp_3m_sde_gpu, ddpm, lcm, ddim, uni_pc,
uni_pc_bh2. ``get_sampler(name, **options)`` returns a fresh :class:`Sampler` (options: ``eta`` and
``s_noise`` for the ancestral and SDE samplers, ``r`` for dpmpp_sde, ``solver_type`` for dpmpp_2m_sde,
``order`` for lms). The ``*_gpu`` names are the same algorithms: ComfyUI only moves their Brownian noise
to the GPU, ours is always drawn on CPU. ComfyUI draws the SDE samplers' noise (dpmpp_sde, dpmpp_2m_sde*,
dpmpp_3m_sde*) from a torchsde Brownian tree; ours comes from the seeded CPU stream with the same
distribution, so those images differ from ComfyUI's for the same seed. ddpm is mathematically the
ancestral Euler step written in the variance-preserving space (the two agree to float rounding).

Where a diffusers scheduler computes exactly our update on explicit sigmas through its public API, it
does the work: euler and ddim step through ``EulerDiscreteScheduler`` (``set_timesteps(sigmas=...)``).
The others are our own step code, cross-checked in the tests against EulerAncestral, Heun, KDPM2,
KDPM2Ancestral, LMS, DPMSolverMultistep (2M, 2M SDE, 3M), DPMSolverSinglestep, DDIM, DDPM and UniPC
on the same sigmas and model (those schedulers keep their history in the scheduler object, mostly lack an
explicit-sigma API, and differ from ComfyUI at the schedule ends).

Every sampler is step-wise::

      state = sampler.init_state(x, sigmas, seed)      # SamplerState; seed = the noise seed
      state = sampler.step(denoise, state)             # exactly one sigma interval, returns a new state
      state = sampler.run(denoise, state, end=k, callback=cb)   # steps up to interval k
      x = sampler.sample(denoise, x, sigmas, seed, callback=cb) # the whole schedule

:class:`SamplerState` (frozen; tensors are never modified in place) holds ``sampler`` (name), ``x``,
``sigmas``, ``step_index`` (next interval), ``denoised`` (last x0 prediction, for "denoised_output" and
previews), ``noise_state`` (CPU generator state, stochastic samplers only) and ``history`` (multistep
memory: tensors, tuples of tensors, floats). Properties ``total_steps``, ``done``, ``sigma``; ``clone()``.
Running 0..k and then k..n gives exactly what one run gives. The callback is called after every step
as ``callback(step_index, total_steps, x, denoised)``; an exception raised in it propagates (interrupts).
Samplers flagged ``stochastic`` draw per-step noise from a CPU generator seeded with the seed, one float32
``randn`` of the latent's shape per draw, continuing from the state's ``noise_state`` (as ComfyUI's default
noise sampler does on CPU). ``inpaint_random_noise`` (ddim) tells an inpainting caller that ComfyUI uses
fresh noise from ``seed + 1`` for the masked-out area with this sampler.

ComfyUI's KSamplerAdvanced (start/end steps) runs a *fresh* sampler on ``sigmas[start:end + 1]``; to match
it, slice the sigmas and call ``sample``. The step-wise state is for continuing one run across nodes.

Noise (``noise``)
-----------------
``prepare_noise(latent_shape, seed, batch_index=None)``: float32 CPU noise as ComfyUI's prepare_noise
draws it (one randn of the whole shape; with ``batch_index``, one draw per index up to the largest).
Seeds are ints in [0, 2**64 - 1].
"""

from .model_sampling import DiscreteModelSampling, make_betas
from .noise import NoiseStream, check_seed, prepare_noise
from .registry import SAMPLER_NAMES, SAMPLERS, SCHEDULER_NAMES, get_sampler, get_sigmas
from .samplers import Denoiser, Sampler, SamplerState, StepCallback
from .schedules import SCHEDULERS

__all__ = [
    "SAMPLERS", "SAMPLER_NAMES", "SCHEDULERS", "SCHEDULER_NAMES", "Denoiser", "DiscreteModelSampling", "NoiseStream",
    "Sampler", "SamplerState", "StepCallback", "check_seed", "get_sampler", "get_sigmas", "make_betas",
    "prepare_noise",
]
