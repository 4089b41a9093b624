"""Procedural captioned pictures of coloured shapes, with depth-like and edge maps, for diffloom's demo model.

A `Scene` is drawn by `sample_scene`, rendered by `render`, described by `caption`, and mapped by
`depth_map` / `edge_map`. Everything is decided by a `numpy.random.Generator`, so one seed gives
the same data on every machine. Pictures are drawn at 4x and reduced, so edges are anti-aliased.

Caption grammar (every optional part is left out at random, so short prompts are in distribution):
    a [small|large] [<colour>] <shape> [<position>] [and a ...] [on a [<texture>] <colour> background]
A plain neutral background (white, gray, black) is the only kind a caption may leave unnamed,
so "a blue square" means a blue square on a plain neutral ground.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Rgb = tuple[int, int, int]

# Named colours, chosen to be far apart so that a picture's colours can be named back (`nearest_colour`).
COLOURS: dict[str, Rgb] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 210, 225),
    "blue": (30, 70, 225),
    "purple": (135, 50, 185),
    "pink": (250, 140, 200),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
NEUTRAL = ("white", "gray", "black")
CHROMATIC = tuple(c for c in COLOURS if c not in NEUTRAL)
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
# Half-extent of a shape as a fraction of the picture side.
SIZES: dict[str, float] = {"small": 0.12, "medium": 0.19, "large": 0.28}
# Grid cell -> (x, y) centre as fractions of the picture side, and how a caption says it.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.22, 0.22), "top": (0.5, 0.22), "top right": (0.78, 0.22),
    "left": (0.22, 0.5), "center": (0.5, 0.5), "right": (0.78, 0.5),
    "bottom left": (0.22, 0.78), "bottom": (0.5, 0.78), "bottom right": (0.78, 0.78),
}
POSITION_PHRASES: dict[str, str] = {
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right",
}
TEXTURES = ("plain", "striped", "checkered", "dotted")
# Depth-like map values: the object drawn last is in front and brightest; the background is far (0).
DEPTH_FRONT = 255
DEPTH_BACK = 160
SUPERSAMPLE = 4
# Colour pairs closer than this (RGB distance) are not used together: the shape would not stand out.
MIN_CONTRAST = 110.0


@dataclass(frozen=True)
class ShapeObject:
    """One shape of a scene; `cx`, `cy`, `radius` are fractions of the picture side."""

    shape: str
    colour: str
    rgb: Rgb
    size: str
    position: str
    cx: float
    cy: float
    radius: float
    rotation: float  # degrees; small, so that a square stays a square and not a diamond


@dataclass(frozen=True)
class Background:
    """The ground of a scene: a named colour, plain or with a two-tone texture."""

    colour: str
    rgb: Rgb
    texture: str
    period: float  # texture period as a fraction of the picture side


@dataclass(frozen=True)
class Scene:
    """A background and one or two shapes, back to front."""

    background: Background
    objects: tuple[ShapeObject, ...]


def _jitter(rgb: Rgb, rng: np.random.Generator, amount: int = 12) -> Rgb:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
    return (r, g, b)


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.dist(a, b)


def nearest_colour(rgb: Sequence[float], names: Sequence[str] = tuple(COLOURS)) -> str:
    """The name in `names` whose reference colour is nearest to `rgb` (0..255)."""
    return min(names, key=lambda n: _distance(COLOURS[n], rgb))


def _sample_background(rng: np.random.Generator) -> Background:
    kind = rng.random()
    if kind < 0.4:
        colour, texture = str(rng.choice(NEUTRAL)), "plain"
    elif kind < 0.75:
        colour, texture = str(rng.choice(CHROMATIC)), "plain"
    else:
        colour, texture = str(rng.choice(list(COLOURS))), str(rng.choice(TEXTURES[1:]))
    return Background(colour, _jitter(COLOURS[colour], rng, 8), texture, float(rng.uniform(0.11, 0.17)))


def _centre(position: str, radius: float, rng: np.random.Generator) -> tuple[float, float]:
    """The centre of a shape in a grid cell, jittered, and kept inside the frame."""
    x, y = POSITIONS[position]
    x += rng.uniform(-0.04, 0.04)
    y += rng.uniform(-0.04, 0.04)
    lo, hi = radius + 0.02, 1.0 - radius - 0.02
    return float(np.clip(x, lo, hi)), float(np.clip(y, lo, hi))


def _far_apart(a: str, b: str) -> bool:
    """Two grid cells that are not neighbours (so two shapes do not pile up)."""
    (ax, ay), (bx, by) = POSITIONS[a], POSITIONS[b]
    return abs(ax - bx) > 0.3 or abs(ay - by) > 0.3


def sample_scene(rng: np.random.Generator, *, two_objects: float = 0.3) -> Scene:
    """A random scene: a background and one shape, or two with probability `two_objects`."""
    background = _sample_background(rng)
    count = 2 if rng.random() < two_objects else 1
    objects: list[ShapeObject] = []
    taken: list[str] = []
    for _ in range(count):
        colours = [c for c in COLOURS if _distance(COLOURS[c], COLOURS[background.colour]) >= MIN_CONTRAST
                   and all(c != o.colour for o in objects)]
        colour = str(rng.choice(colours))
        size = str(rng.choice(list(SIZES) if count == 1 else ["small", "medium"]))
        # Two shapes keep to the outer cells, at least two cells apart, so they never overlap.
        cells = [p for p in POSITIONS if (count == 1 or p != "center") and all(_far_apart(p, t) for t in taken)]
        position = str(rng.choice(cells))
        taken.append(position)
        radius = SIZES[size] * float(rng.uniform(0.9, 1.1))
        cx, cy = _centre(position, radius, rng)
        objects.append(ShapeObject(shape=str(rng.choice(SHAPES)), colour=colour, rgb=_jitter(COLOURS[colour], rng),
                                   size=size, position=position, cx=cx, cy=cy, radius=radius,
                                   rotation=float(rng.uniform(-12, 12))))
    return Scene(background, tuple(objects))


# ------------------------------------------------------------------------------------------ drawing


def _polygon(obj: ShapeObject, side: float) -> list[tuple[float, float]] | None:
    """The outline of a shape in pixels of a `side`-pixel picture (None for a circle)."""
    cx, cy, r = obj.cx * side, obj.cy * side, obj.radius * side
    rot = math.radians(obj.rotation)

    def ring(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot))
                for x, y in points]

    if obj.shape == "circle":
        return None
    if obj.shape == "square":
        s = r * 0.88
        return ring([(-s, -s), (s, -s), (s, s), (-s, s)])
    if obj.shape == "diamond":
        return ring([(0, -r), (r * 0.75, 0), (0, r), (-r * 0.75, 0)])
    if obj.shape == "triangle":
        return ring([(r * math.cos(math.radians(a)), r * math.sin(math.radians(a)) + r * 0.15)
                     for a in (-90, 30, 150)])
    if obj.shape == "star":
        pts = []
        for i in range(10):
            a = math.radians(-90 + 36 * i)
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((rr * math.cos(a), rr * math.sin(a) + r * 0.08))
        return ring(pts)
    if obj.shape == "cross":
        a, b = r * 0.95, r * 0.33
        return ring([(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b),
                     (-a, -b), (-b, -b)])
    raise ValueError(f"shape {obj.shape!r} is not one of {SHAPES}")


def _draw_shape(draw: ImageDraw.ImageDraw, obj: ShapeObject, side: float, fill: int | Rgb) -> None:
    polygon = _polygon(obj, side)
    if polygon is None:
        cx, cy, r = obj.cx * side, obj.cy * side, obj.radius * side
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(polygon, fill=fill)


def _shade(rgb: Rgb, factor: float) -> Rgb:
    """`rgb` moved towards white (factor > 0) or black (factor < 0)."""
    target = 255 if factor > 0 else 0
    f = abs(factor)
    return tuple(int(round(c + (target - c) * f)) for c in rgb)  # type: ignore[return-value]


def _draw_background(draw: ImageDraw.ImageDraw, bg: Background, side: int) -> None:
    draw.rectangle((0, 0, side, side), fill=bg.rgb)
    if bg.texture == "plain":
        return
    # The second tone is lighter for dark colours and darker for light ones, so the texture stays visible.
    second = _shade(bg.rgb, 0.35 if sum(bg.rgb) < 330 else -0.3)
    step = bg.period * side
    n = int(side / step) + 2
    if bg.texture == "striped":
        for i in range(n):
            x0 = i * step
            draw.polygon([(x0, 0), (x0 + step / 2, 0), (x0 + step / 2 - side, side), (x0 - side, side)], fill=second)
            draw.polygon([(x0 + side, 0), (x0 + side + step / 2, 0), (x0 + step / 2, side), (x0, side)], fill=second)
    elif bg.texture == "checkered":
        for i in range(n):
            for j in range(n):
                if (i + j) % 2:
                    draw.rectangle((i * step, j * step, (i + 1) * step, (j + 1) * step), fill=second)
    elif bg.texture == "dotted":
        r = step * 0.22
        for i in range(n):
            for j in range(n):
                x, y = (i + 0.5) * step, (j + 0.5) * step
                draw.ellipse((x - r, y - r, x + r, y + r), fill=second)
    else:
        raise ValueError(f"texture {bg.texture!r} is not one of {TEXTURES}")


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as an RGB picture of `size` x `size` pixels."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, scene.background, big)
    for obj in scene.objects:
        _draw_shape(draw, obj, big, obj.rgb)
    return image.resize((size, size), Image.Resampling.BOX)


def object_masks(scene: Scene, size: int = 64) -> list[np.ndarray]:
    """Per object, the float mask (0..1) of where it is visible (later objects cover earlier ones)."""
    big = size * SUPERSAMPLE
    masks: list[np.ndarray] = []
    for i, obj in enumerate(scene.objects):
        layer = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(layer)
        _draw_shape(draw, obj, big, 255)
        for front in scene.objects[i + 1:]:
            _draw_shape(draw, front, big, 0)
        masks.append(np.asarray(layer.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0)
    return masks


def depth_map(scene: Scene, size: int = 64) -> Image.Image:
    """A depth-like map: black background, each shape a flat grey, the front one brightest (RGB)."""
    big = size * SUPERSAMPLE
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    n = len(scene.objects)
    for i, obj in enumerate(scene.objects):
        level = DEPTH_FRONT if i == n - 1 else DEPTH_BACK
        _draw_shape(draw, obj, big, level)
    return layer.resize((size, size), Image.Resampling.BOX).convert("RGB")


def edge_map(scene: Scene, size: int = 64) -> Image.Image:
    """White outlines of the shapes on black, as an edge detector would give (RGB)."""
    depth = depth_map(scene, size * 2).convert("L")
    edges = depth.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
    return edges.resize((size, size), Image.Resampling.BOX).point(lambda v: 255 if v > 60 else 0).convert("RGB")


# ------------------------------------------------------------------------------------------ captions


def _describe(obj: ShapeObject, rng: np.random.Generator, p_size: float, p_colour: float,
              p_position: float) -> str:
    words = []
    if obj.size != "medium" and rng.random() < p_size:
        words.append(obj.size)
    if rng.random() < p_colour:
        words.append(obj.colour)
    words.append(obj.shape)
    if rng.random() < p_position:
        words.append(POSITION_PHRASES[obj.position])
    return f"{_article(words[0])} {' '.join(words)}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, rng: np.random.Generator, *, p_size: float = 0.6, p_colour: float = 0.9,
            p_position: float = 0.55, p_neutral_background: float = 0.5) -> str:
    """A caption of the scene; each optional attribute is named with the given probability.

    A coloured or textured background is always named; a plain neutral one with `p_neutral_background`.
    """
    parts = " and ".join(_describe(o, rng, p_size, p_colour, p_position) for o in scene.objects)
    bg = scene.background
    if bg.texture != "plain" or bg.colour not in NEUTRAL or rng.random() < p_neutral_background:
        texture = "" if bg.texture == "plain" else bg.texture + " "
        parts += f" on a {texture}{bg.colour} background"
    return parts


def vocabulary() -> list[str]:
    """Every word a caption can use."""
    words = {"a", "an", "and", "on", "at", "the", "in", "background", *COLOURS, *SHAPES, *SIZES, *TEXTURES[1:]}
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    return sorted(words)


@dataclass(frozen=True)
class Sample:
    """One training example: the picture, its caption, its maps, and the scene they come from."""

    scene: Scene
    image: Image.Image
    caption: str
    depth: Image.Image
    edges: Image.Image


def make_sample(rng: np.random.Generator, size: int = 64) -> Sample:
    """A scene, drawn and captioned, with both maps."""
    scene = sample_scene(rng)
    return Sample(scene, render(scene, size), caption(scene, rng), depth_map(scene, size), edge_map(scene, size))


def make_arrays(count: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`count` samples as uint8 arrays: images [N,H,W,3], depth maps [N,H,W] and captions."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    depths = np.empty((count, size, size), dtype=np.uint8)
    captions: list[str] = []
    for i in range(count):
        scene = sample_scene(rng)
        images[i] = np.asarray(render(scene, size))
        depths[i] = np.asarray(depth_map(scene, size))[..., 0]
        captions.append(caption(scene, rng))
    return images, depths, captions
