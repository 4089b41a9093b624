"""Seeded noise: the initial latent noise (ComfyUI's draw order) and the per-step noise stream of stochastic samplers.

All noise is drawn in float32 by a CPU ``torch.Generator`` and only then moved to the target device and
dtype, so a seed gives the same numbers on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SEED_MIN = 0
SEED_MAX = 2**64 - 1


def check_seed(seed: int, what: str = "seed") -> int:
    """Return ``seed`` if it is an int in [0, 2**64 - 1], else raise ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{what} is {seed!r} ({type(seed).__name__}), must be an int in [0, 2**64 - 1]")
    if not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"{what} is {seed}, must be in [0, 2**64 - 1]")
    return seed


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator in the state ``torch.manual_seed(seed)`` leaves the default generator in."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(check_seed(seed))
    return generator


def prepare_noise(latent_shape: Sequence[int], seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """Initial noise for a latent batch, float32 on CPU, drawn the way ComfyUI draws it.

    Without ``batch_index``: one ``randn`` of the whole shape. With it: one ``[1, ...]`` draw per index
    from 0 up to the largest listed index, keeping the draws of the listed indices (in the listed order,
    repeats allowed), so latent ``k`` of a batch gets the same noise as when generated alone at index ``k``.
    """
    shape = tuple(int(d) for d in latent_shape)
    if len(shape) < 1 or any(d < 0 for d in shape):
        raise ValueError(f"prepare_noise: latent_shape is {shape}, must be a non-empty shape of sizes >= 0")
    generator = seeded_generator(seed)
    if batch_index is None:
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    indices = [int(i) for i in batch_index]
    if len(indices) != shape[0]:
        raise ValueError(
            f"prepare_noise: batch_index has {len(indices)} entries, must have one per latent ({shape[0]})"
        )
    if any(i < 0 for i in indices):
        raise ValueError(f"prepare_noise: batch_index is {indices}, every index must be >= 0")
    if not indices:
        return torch.zeros(shape, dtype=torch.float32)
    wanted = set(indices)
    draws: dict[int, torch.Tensor] = {}
    for i in range(max(indices) + 1):
        draw = torch.randn((1,) + shape[1:], generator=generator, dtype=torch.float32)
        if i in wanted:
            draws[i] = draw
    return torch.cat([draws[i] for i in indices], dim=0)


class NoiseStream:
    """The sequential per-step noise of a stochastic sampler, as a plain generator-state tensor.

    It starts as a generator seeded with the sampler seed (as ComfyUI's default noise sampler does), and
    every draw is one float32 ``randn`` of the latent's shape. Its ``state`` goes into the SamplerState, so a
    run split into chunks draws exactly what a whole run draws.
    """

    def __init__(self, state: torch.Tensor) -> None:
        self._generator = torch.Generator(device="cpu")
        self._generator.set_state(state)

    @classmethod
    def from_seed(cls, seed: int) -> NoiseStream:
        """A fresh stream for ``seed``."""
        return cls(seeded_generator(seed).get_state())

    def draw(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``like``, on its device and in its dtype."""
        noise = torch.randn(like.shape, generator=self._generator, dtype=torch.float32)
        return noise.to(device=like.device, dtype=like.dtype)

    @property
    def state(self) -> torch.Tensor:
        """The generator state after the draws so far (a uint8 CPU tensor)."""
        return self._generator.get_state()
