"""Measure what a generated picture shows: its named colours, its background, where its object is.

Used by the training run's evaluation and by the tests that check that the demo model follows its
prompt. Pixels are named by the nearest reference colour of `shapes.COLOURS`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from nodes.demo_model.shapes import COLOURS

_NAMES = tuple(COLOURS)
_REFERENCE = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An [H, W, 3] float array in 0..255 from a PIL image, a uint8 array or a 0..1 float array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"picture: expected an [H, W, 3] array, got shape {array.shape}")
    return array * 255.0 if np.issubdtype(np.asarray(image).dtype, np.floating) else array


def colour_labels(image: Image.Image | np.ndarray) -> np.ndarray:
    """[H, W] indices into `shapes.COLOURS` of the nearest named colour of each pixel."""
    rgb = as_rgb_array(image)
    distances = ((rgb[:, :, None, :] - _REFERENCE[None, None]) ** 2).sum(-1)
    return distances.argmin(-1)


def colour_fractions(image: Image.Image | np.ndarray) -> dict[str, float]:
    """The fraction of pixels nearest to each named colour."""
    counts = np.bincount(colour_labels(image).ravel(), minlength=len(_NAMES))
    return {n: float(c) / counts.sum() for n, c in zip(_NAMES, counts)}


@dataclass(frozen=True)
class ColourReading:
    """A picture's background colour (the commonest along its border) and the colours of everything else."""

    background: str
    foreground: dict[str, float]  # fraction of the *non-background* pixels per colour, largest first
    foreground_share: float  # fraction of all pixels that are not background

    @property
    def dominant(self) -> str | None:
        """The commonest non-background colour (None for a picture of background only)."""
        return next(iter(self.foreground), None)

    def margin(self) -> float:
        """How much more of the dominant colour there is than of the runner-up (fractions of foreground)."""
        shares = list(self.foreground.values()) + [0.0, 0.0]
        return shares[0] - shares[1]


def read_colours(image: Image.Image | np.ndarray, *, ignore: Sequence[str] = ()) -> ColourReading:
    """Name the background of a picture and the colours of its foreground; `ignore` drops more colours."""
    labels = colour_labels(image)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    dropped = {background} | {_NAMES.index(n) for n in ignore}
    keep = ~np.isin(labels, list(dropped))
    counts = np.bincount(labels[keep], minlength=len(_NAMES))
    total = max(int(counts.sum()), 1)
    order = np.argsort(-counts, kind="stable")
    foreground = {_NAMES[i]: float(counts[i]) / total for i in order if counts[i] > 0}
    return ColourReading(_NAMES[background], foreground, float(keep.mean()))


def colour_centroid(image: Image.Image | np.ndarray, colour: str) -> tuple[float, float] | None:
    """The (x, y) centre, as fractions of width and height, of the pixels nearest `colour` (None if there are none)."""
    mask = colour_labels(image) == _NAMES.index(colour)
    return mask_centroid(mask)


def mask_centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """The (x, y) centre of a boolean or 0..1 mask, as fractions of its width and height."""
    weights = np.asarray(mask, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        return None
    h, w = weights.shape
    ys, xs = np.mgrid[0:h, 0:w]
    return float((weights * (xs + 0.5)).sum() / total / w), float((weights * (ys + 0.5)).sum() / total / h)


def foreground_centroid(image: Image.Image | np.ndarray) -> tuple[float, float] | None:
    """The (x, y) centre of every pixel whose colour differs from the background's."""
    labels = colour_labels(image)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = np.bincount(border, minlength=len(_NAMES)).argmax()
    return mask_centroid(labels != background)
