"""The step-wise sampler protocol: SamplerState, the Sampler base class and the k-diffusion helpers they share."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Union

import torch

from ..noise import NoiseStream, check_seed

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoise(x, sigma) -> x0``: x in sigma space [B, ...]; sigma a float32 tensor of shape [B] on x's device."""

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""``callback(step_index, total_steps, x, denoised)`` after each step; x is the latent after the step."""

HistoryValue = Union[torch.Tensor, float, int, None, tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class SamplerState:
    """Everything a sampler needs to continue: plain tensors and numbers, safe to pass between nodes.

    ``step_index`` is the next sigma interval to run: ``sigmas[step_index] -> sigmas[step_index + 1]``.
    ``denoised`` is the x0 prediction of the last step run (None before the first). ``noise_state`` is the
    CPU generator state of a stochastic sampler (None otherwise). ``history`` holds a multistep method's
    memory (previous denoised values, ...). States are never modified in place: ``step`` returns a new one.
    """

    sampler: str
    x: torch.Tensor
    sigmas: torch.Tensor
    step_index: int = 0
    denoised: torch.Tensor | None = None
    noise_state: torch.Tensor | None = None
    history: Mapping[str, HistoryValue] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        """Number of sigma intervals in the schedule."""
        return int(self.sigmas.shape[0]) - 1

    @property
    def done(self) -> bool:
        """True when every interval has been run."""
        return self.step_index >= self.total_steps

    @property
    def sigma(self) -> float:
        """The sigma x currently sits at."""
        return float(self.sigmas[min(self.step_index, self.total_steps)])

    def clone(self) -> SamplerState:
        """A deep copy whose tensors share no storage with this state."""

        def copy(value: HistoryValue) -> HistoryValue:
            if isinstance(value, torch.Tensor):
                return value.clone()
            if isinstance(value, tuple):
                return tuple(v.clone() for v in value)
            return value

        return SamplerState(
            sampler=self.sampler,
            x=self.x.clone(),
            sigmas=self.sigmas.clone(),
            step_index=self.step_index,
            denoised=None if self.denoised is None else self.denoised.clone(),
            noise_state=None if self.noise_state is None else self.noise_state.clone(),
            history={key: copy(value) for key, value in self.history.items()},
        )


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - x0) / sigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step into a deterministic part down to sigma_down and fresh noise of std sigma_up (eta scales it)."""
    if not eta:
        return sigma_to, 0.0
    variance = max(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2, 0.0)
    sigma_up = min(sigma_to, eta * math.sqrt(variance))
    sigma_down = math.sqrt(max(sigma_to**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def log_midpoint(sigma_a: float, sigma_b: float) -> float:
    """The geometric mean of two positive sigmas (the midpoint in log-sigma)."""
    return math.exp(0.5 * (math.log(sigma_a) + math.log(sigma_b)))


class Sampler:
    """One sampling algorithm in k-diffusion form (x in sigma space), run one sigma interval per ``step``.

    Subclasses set ``name`` and implement ``_step``. Class flags tell callers how to use them:
    ``stochastic`` (draws per-step noise from the seed), ``discard_penultimate_sigma`` (ComfyUI computes one
    extra schedule step and drops the penultimate sigma for this sampler) and ``inpaint_random_noise``
    (ComfyUI refreshes the masked-area noise with seed + 1 for this sampler when inpainting).
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False
    discard_penultimate_sigma: ClassVar[bool] = False
    inpaint_random_noise: ClassVar[bool] = False

    def init_state(self, x: torch.Tensor, sigmas: torch.Tensor, seed: int = 0) -> SamplerState:
        """The state before the first step: x (already noised to sigmas[0]) and the schedule."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 1:
            raise ValueError(f"sampler {self.name!r}: x must be a floating-point tensor [B, ...], got {type(x).__name__}"
                             + (f" {x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else ""))
        sigmas = torch.as_tensor(sigmas).detach().to(device="cpu", dtype=torch.float32).clone()
        if sigmas.ndim != 1 or sigmas.shape[0] < 1:
            raise ValueError(f"sampler {self.name!r}: sigmas must be a 1-D tensor with >= 1 entry, got shape {tuple(sigmas.shape)}")
        if not bool(torch.isfinite(sigmas).all()) or bool((sigmas < 0).any()):
            raise ValueError(f"sampler {self.name!r}: sigmas must be finite and >= 0, got {sigmas.tolist()}")
        if bool((sigmas[:-1] <= 0).any()):
            raise ValueError(
                f"sampler {self.name!r}: only the last sigma may be 0 (a step cannot start at sigma 0), got {sigmas.tolist()}"
            )
        noise_state = NoiseStream.from_seed(check_seed(seed, f"sampler {self.name!r}: seed")).state if self.stochastic else None
        return SamplerState(sampler=self.name, x=x, sigmas=sigmas, noise_state=noise_state)

    def step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        """Run one sigma interval and return the next state (the given state is left untouched)."""
        if state.sampler != self.name:
            raise ValueError(f"sampler {self.name!r}: state belongs to sampler {state.sampler!r}")
        if state.done:
            raise ValueError(
                f"sampler {self.name!r}: state is at step {state.step_index} of {state.total_steps}, nothing left to run"
            )
        return self._step(denoise, state)

    def run(
        self,
        denoise: Denoiser,
        state: SamplerState,
        end: int | None = None,
        callback: StepCallback | None = None,
    ) -> SamplerState:
        """Step from ``state.step_index`` up to ``end`` (default: the last interval); the callback sees every step."""
        end = state.total_steps if end is None else end
        if not state.step_index <= end <= state.total_steps:
            raise ValueError(
                f"sampler {self.name!r}: end is {end}, must be in [{state.step_index}, {state.total_steps}]"
            )
        while state.step_index < end:
            state = self.step(denoise, state)
            if callback is not None:
                assert state.denoised is not None
                callback(state.step_index - 1, state.total_steps, state.x, state.denoised)
        return state

    def sample(
        self,
        denoise: Denoiser,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        seed: int = 0,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Run the whole schedule from x (noised to sigmas[0]) and return the final latent."""
        return self.run(denoise, self.init_state(x, sigmas, seed), callback=callback).x

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        raise NotImplementedError

    # Helpers for subclasses.

    def _denoise(self, denoise: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Call the denoiser at a scalar sigma, as a per-batch float32 sigma tensor, and check its answer."""
        sigma_in = torch.full((x.shape[0],), sigma, dtype=torch.float32, device=x.device)
        denoised = denoise(x, sigma_in)
        if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
            got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
            raise ValueError(f"sampler {self.name!r}: denoiser returned {got}, must return a tensor shaped like x {tuple(x.shape)}")
        return denoised.to(dtype=x.dtype)

    def _noise(self, state: SamplerState) -> NoiseStream:
        """The noise stream of a stochastic sampler's state."""
        if state.noise_state is None:
            raise ValueError(f"sampler {self.name!r}: state has no noise state (was it made by init_state?)")
        return NoiseStream(state.noise_state)

    def _next(
        self,
        state: SamplerState,
        x: torch.Tensor,
        denoised: torch.Tensor,
        noise: NoiseStream | None = None,
        history: Mapping[str, HistoryValue] | None = None,
    ) -> SamplerState:
        """The state after one interval."""
        return dataclasses.replace(
            state,
            x=x,
            step_index=state.step_index + 1,
            denoised=denoised,
            noise_state=state.noise_state if noise is None else noise.state,
            history=dict(state.history) if history is None else dict(history),
        )


class NoisySampler(Sampler):
    """A sampler that adds fresh noise at each step: ``eta`` scales how much, ``s_noise`` its standard deviation."""

    stochastic = True

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0) -> None:
        self.eta = eta
        self.s_noise = s_noise


class AncestralSampler(NoisySampler):
    """k-diffusion's ancestral scheme: a deterministic step down to sigma_down, then fresh noise of std sigma_up.

    Subclasses implement ``_descend``, the deterministic part.
    """

    def _descend(self, denoise: Denoiser, x: torch.Tensor, sigma: float, sigma_down: float,
                 denoised: torch.Tensor) -> torch.Tensor:
        """x at sigma_down, from x at sigma and its x0 prediction `denoised`."""
        raise NotImplementedError

    def _step(self, denoise: Denoiser, state: SamplerState) -> SamplerState:
        i = state.step_index
        sigma, sigma_next = float(state.sigmas[i]), float(state.sigmas[i + 1])
        denoised = self._denoise(denoise, state.x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        if sigma_down == 0:  # the last step: straight to the x0 prediction, whatever the method
            x = state.x + to_d(state.x, sigma, denoised) * (sigma_down - sigma)
        else:
            x = self._descend(denoise, state.x, sigma, sigma_down, denoised)
        noise = self._noise(state)
        if sigma_next > 0:
            x = x + noise.draw(x) * (self.s_noise * sigma_up)
        return self._next(state, x, denoised, noise)
