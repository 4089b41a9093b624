"""Tests of the initial noise and the per-step noise stream."""

from __future__ import annotations

import pytest
import torch

from nodes.sampling import NoiseStream, prepare_noise

SHAPE = (3, 4, 6, 5)


def reference_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """What ComfyUI's recipe gives: torch.manual_seed, then one randn of the whole shape."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.randn(shape)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31, 2**63 + 5, 2**64 - 1])
def test_prepare_noise_matches_manual_seed_and_one_randn(seed: int) -> None:
    noise = prepare_noise(SHAPE, seed)
    assert noise.dtype == torch.float32 and noise.device.type == "cpu" and noise.shape == SHAPE
    assert torch.equal(noise, reference_noise(SHAPE, seed))


def test_prepare_noise_leaves_the_global_generator_alone() -> None:
    before = torch.random.get_rng_state()
    prepare_noise(SHAPE, 7)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_prepare_noise_with_batch_index_draws_per_index() -> None:
    seed, item = 11, SHAPE[1:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        per_index = [torch.randn((1,) + item) for _ in range(4)]
    noise = prepare_noise((3,) + item, seed, batch_index=[3, 0, 3])
    assert torch.equal(noise, torch.cat([per_index[3], per_index[0], per_index[3]]))
    # Index 0 alone is the first draw, the same as a batch of one without batch_index.
    assert torch.equal(prepare_noise((1,) + item, seed, batch_index=[0]), prepare_noise((1,) + item, seed))


@pytest.mark.parametrize(
    ("seed", "message"),
    [(-1, "seed is -1, must be in"), (2**64, "seed is 18446744073709551616"), (True, "seed is True"), (1.5, "seed is 1.5")],
)
def test_prepare_noise_rejects_bad_seeds(seed: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_noise(SHAPE, seed)  # type: ignore[arg-type]


def test_prepare_noise_rejects_a_batch_index_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="batch_index has 2 entries, must have one per latent"):
        prepare_noise(SHAPE, 0, batch_index=[0, 1])


def test_noise_stream_continues_the_seeded_sequence() -> None:
    like = torch.zeros(SHAPE, dtype=torch.float64)
    stream = NoiseStream.from_seed(5)
    first = stream.draw(like)
    resumed = NoiseStream(stream.state)
    second = resumed.draw(like)
    generator = torch.Generator().manual_seed(5)
    assert first.dtype == torch.float64
    assert torch.equal(first, torch.randn(SHAPE, generator=generator).double())
    assert torch.equal(second, torch.randn(SHAPE, generator=generator).double())
