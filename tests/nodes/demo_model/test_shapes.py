"""The procedural data: captions say what is drawn, maps are where the shapes are, a seed fixes everything."""
from __future__ import annotations

import numpy as np
import pytest

from nodes.demo_model import measure, shapes

SEEDS = range(40)


def _scene_and_caption(seed: int) -> tuple[shapes.Scene, str]:
    rng = np.random.default_rng(seed)
    scene = shapes.sample_scene(rng)
    return scene, shapes.caption(scene, rng)


@pytest.mark.parametrize("seed", SEEDS)
def test_each_object_is_drawn_in_its_colour_where_it_is(seed: int) -> None:
    scene, _ = _scene_and_caption(seed)
    image = np.asarray(shapes.render(scene), dtype=np.float32)
    for obj, mask in zip(scene.objects, shapes.object_masks(scene)):
        inside = mask > 0.99
        assert inside.sum() >= 20, f"{obj.shape} covers only {inside.sum()} whole pixels"
        mean = image[inside].mean(0)
        assert shapes.nearest_colour(mean) == obj.colour, (obj, mean)
        centre = measure.mask_centroid(mask)
        assert centre is not None
        # Stars and triangles are not centred on their bounding circle; 0.1 of the side is far tighter
        # than the 0.28 between two grid cells.
        assert abs(centre[0] - obj.cx) < 0.1 and abs(centre[1] - obj.cy) < 0.1, (obj, centre)


@pytest.mark.parametrize("seed", SEEDS)
def test_background_has_its_colour_away_from_the_shapes(seed: int) -> None:
    scene, _ = _scene_and_caption(seed)
    image = np.asarray(shapes.render(scene), dtype=np.float32)
    covered = sum(shapes.object_masks(scene)) > 0
    bg = image[~covered]
    if scene.background.texture == "plain":
        assert shapes.nearest_colour(bg.mean(0)) == scene.background.colour
    else:
        # A textured ground has two tones of its colour; the base tone is the commoner of the two.
        names = [shapes.nearest_colour(p) for p in bg[::7]]
        assert max(set(names), key=names.count) == scene.background.colour or \
            scene.background.colour in names, (scene.background, set(names))


@pytest.mark.parametrize("seed", SEEDS)
def test_caption_names_only_what_is_drawn(seed: int) -> None:
    scene, text = _scene_and_caption(seed)
    words = set(text.split())
    drawn_colours = {o.colour for o in scene.objects} | {scene.background.colour}
    assert words & set(shapes.COLOURS) <= drawn_colours, text
    assert words & set(shapes.SHAPES) == {o.shape for o in scene.objects}, text
    # A position phrase ends an object's description: before " and ", " on a ", or the end.
    named = [p for p, phrase in shapes.POSITION_PHRASES.items()
             if any(f" {phrase}{end}" in f" {text}|" for end in (" and ", " on a ", "|"))]
    assert set(named) <= {o.position for o in scene.objects}, (text, named)
    if scene.background.texture != "plain" or scene.background.colour not in shapes.NEUTRAL:
        texture = "" if scene.background.texture == "plain" else scene.background.texture + " "
        assert text.endswith(f" on a {texture}{scene.background.colour} background"), text
    assert set(text.split()) <= set(shapes.vocabulary()), text


def _one_object_scene(colour: str, shape: str, background: str) -> shapes.Scene:
    return shapes.Scene(shapes.Background(background, shapes.COLOURS[background], "plain", 0.13),
                        (shapes.ShapeObject(shape, colour, shapes.COLOURS[colour], "medium", "center", 0.5, 0.5, 0.19, 0),))


@pytest.mark.parametrize(("prompt", "scene"), [
    ("a red circle on a white background", _one_object_scene("red", "circle", "white")),
    ("a blue square", _one_object_scene("blue", "square", "gray")),
    ("a circle on a white background", _one_object_scene("red", "circle", "white")),
])
def test_caption_grammar_produces_the_test_prompts(prompt: str, scene: shapes.Scene) -> None:
    # The prompts the engine tests use must be sentences the training captions produce.
    rng = np.random.default_rng(0)
    assert prompt in {shapes.caption(scene, rng) for _ in range(300)}


def test_unnamed_backgrounds_are_plain_and_neutral() -> None:
    rng = np.random.default_rng(5)
    for _ in range(500):
        scene = shapes.sample_scene(rng)
        if "background" not in shapes.caption(scene, rng):
            assert scene.background.texture == "plain" and scene.background.colour in shapes.NEUTRAL


def test_positions_in_captions_match_the_picture() -> None:
    # Where a one-object caption says left/right/top/bottom, the object's pixels are on that side.
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 30:
        scene = shapes.sample_scene(rng, two_objects=0.0)
        obj = scene.objects[0]
        centre = measure.mask_centroid(shapes.object_masks(scene)[0])
        assert centre is not None
        x, y = centre
        if "left" in obj.position:
            assert x < 0.45, (obj, centre)
        if "right" in obj.position:
            assert x > 0.55, (obj, centre)
        if "top" in obj.position:
            assert y < 0.45, (obj, centre)
        if "bottom" in obj.position:
            assert y > 0.55, (obj, centre)
        checked += 1


@pytest.mark.parametrize("seed", SEEDS)
def test_maps_are_bright_exactly_where_the_shapes_are(seed: int) -> None:
    scene, _ = _scene_and_caption(seed)
    depth = np.asarray(shapes.depth_map(scene), dtype=np.float32)[..., 0]
    edges = np.asarray(shapes.edge_map(scene), dtype=np.float32)[..., 0]
    masks = shapes.object_masks(scene)
    covered = sum(masks)
    assert depth.shape == edges.shape == (64, 64)
    assert (depth[covered < 0.01] == 0).all()
    for i, mask in enumerate(masks):
        level = shapes.DEPTH_FRONT if i == len(masks) - 1 else shapes.DEPTH_BACK
        assert np.abs(depth[mask > 0.99] - level).max() <= 1
    # Edges lie on shape boundaries: every edge pixel is within a pixel of a change in the depth map.
    assert edges.max() == 255
    boundary = np.zeros_like(depth, dtype=bool)
    boundary[1:] |= depth[1:] != depth[:-1]
    boundary[:-1] |= depth[1:] != depth[:-1]
    boundary[:, 1:] |= depth[:, 1:] != depth[:, :-1]
    boundary[:, :-1] |= depth[:, 1:] != depth[:, :-1]
    near = boundary.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(boundary, dy, 0), dx, 1)
    assert near[edges > 0].all()
    assert (edges[covered > 0.01] > 0).any()


def test_a_seed_fixes_the_data() -> None:
    a = shapes.make_arrays(6, seed=3)
    b = shapes.make_arrays(6, seed=3)
    c = shapes.make_arrays(6, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_two_objects_never_overlap() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        scene = shapes.sample_scene(rng, two_objects=1.0)
        a, b = scene.objects
        assert a.position != b.position and "center" not in (a.position, b.position)
        assert np.hypot(a.cx - b.cx, a.cy - b.cy) > a.radius + b.radius, (a, b)


def test_nearest_colour_names_the_reference_colours() -> None:
    for name, rgb in shapes.COLOURS.items():
        assert shapes.nearest_colour(rgb) == name


def test_read_colours_finds_background_and_dominant_foreground() -> None:
    scene = shapes.Scene(shapes.Background("white", shapes.COLOURS["white"], "plain", 0.13),
                         (shapes.ShapeObject("circle", "red", shapes.COLOURS["red"], "large", "left", 0.3, 0.5, 0.25, 0),))
    reading = measure.read_colours(shapes.render(scene))
    assert reading.background == "white"
    assert reading.dominant == "red"
    assert reading.margin() > 0.5
    x, _ = measure.foreground_centroid(shapes.render(scene)) or (1.0, 1.0)
    assert abs(x - 0.3) < 0.05


def test_a_tinted_background_is_not_taken_for_an_object() -> None:
    # Generated backgrounds are often tinted or shaded; only what differs clearly from them is foreground.
    scene = shapes.Scene(shapes.Background("white", (205, 235, 238), "plain", 0.13),
                         (shapes.ShapeObject("square", "blue", shapes.COLOURS["blue"], "medium", "right", 0.7, 0.5, 0.19, 0),))
    pixels = np.asarray(shapes.render(scene)).astype(np.float32)
    pixels[:, :32] *= 0.93  # a shaded left half
    reading = measure.read_colours(pixels.astype(np.uint8))
    assert reading.dominant == "blue" and reading.margin() > 0.8
    assert 0.08 < reading.foreground_share < 0.2
