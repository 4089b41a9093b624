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
# RGB distance from the background colour beyond which a pixel is foreground: far above the shading
# and tint of a generated background, far below the distance between two named colours.
FOREGROUND_DISTANCE = 80.0
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
    return _labels(as_rgb_array(image))


def _labels(rgb: np.ndarray) -> np.ndarray:
    distances = ((rgb[:, :, None, :] - _REFERENCE[None, None]) ** 2).sum(-1)
    return distances.argmin(-1)


def colour_fractions(image: Image.Image | np.ndarray) -> dict[str, float]:
    """The fraction of pixels nearest to each named colour."""
    counts = np.bincount(colour_labels(image).ravel(), minlength=len(_NAMES))
    return {n: float(c) / counts.sum() for n, c in zip(_NAMES, counts)}


@dataclass(frozen=True)
class ColourReading:
    """A picture's background colour (the median of its border) and the colours of everything else."""

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


def _border(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])


def background_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """The picture's background colour: the per-channel median of its border pixels."""
    return np.median(_border(as_rgb_array(image)), axis=0)


def foreground_mask(image: Image.Image | np.ndarray, threshold: float = FOREGROUND_DISTANCE) -> np.ndarray:
    """Pixels farther than `threshold` (RGB distance, 0..441) from the background colour."""
    return _foreground(as_rgb_array(image), threshold)


def _foreground(rgb: np.ndarray, threshold: float = FOREGROUND_DISTANCE) -> np.ndarray:
    background = np.median(_border(rgb), axis=0)
    return np.sqrt(((rgb - background) ** 2).sum(-1)) > threshold


def read_colours(image: Image.Image | np.ndarray, *, ignore: Sequence[str] = ()) -> ColourReading:
    """Name the background of a picture and the colours of its foreground; `ignore` drops more colours.

    The foreground is what differs clearly from the border's median colour, so a tinted or shaded
    background does not count as an object; foreground pixels are named by the nearest named colour.
    """
    rgb = as_rgb_array(image)
    keep = _foreground(rgb)
    labels = _labels(rgb)
    background = _NAMES.index(nearest_colour_name(np.median(_border(rgb), axis=0)))
    if ignore:
        keep &= ~np.isin(labels, [_NAMES.index(n) for n in ignore])
    counts = np.bincount(labels[keep], minlength=len(_NAMES))
    total = max(int(counts.sum()), 1)
    order = np.argsort(-counts, kind="stable")
    foreground = {_NAMES[i]: float(counts[i]) / total for i in order if counts[i] > 0}
    return ColourReading(_NAMES[background], foreground, float(keep.mean()))


def nearest_colour_name(rgb: Sequence[float]) -> str:
    """The named colour nearest to one RGB value (0..255)."""
    return _NAMES[int(((_REFERENCE - np.asarray(rgb, dtype=np.float32)) ** 2).sum(-1).argmin())]


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
    """The (x, y) centre of the pixels that differ clearly from the background colour."""
    return mask_centroid(foreground_mask(image))
