"""Pictures of the toy world: shape x colour x texture objects, other styles, and real digits.

A toy class is a shape, a colour and a texture ("red striped circle"; 4 x 4 x 3 = 48 classes).
A scene is one to four copies of one class on a plain background; ``render_scene`` draws it with
numpy/PIL at any size (56 x 56 by default: 4 x 4 patches of 14 px, 2 x 2 of them merged).
Objects are >= 24 px in single-object scenes, so shape, colour and texture stay visible.

    scene = Scene(class_index=5, placements=(Placement(20, 30, 30),), variant="plain", style="plain")
    png = encode_png(render_scene(scene, image_size=56, rng=rng))

Variants are renderers (``plain``: the target task; ``v2``: a slightly shifted renderer, other
sizes, positions and background, like ImageNetV2). Styles change the look (``cartoon``
outlines, ``noisy`` speckled background, ``dark`` background, ``blurred``) while keeping shape,
colour and texture recognisable. ``digit_image`` colourises an 8 x 8 scikit-learn digit.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (214, 40, 40),
    "green": (40, 150, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 185, 20),
}
TEXTURES = ("solid", "striped", "dotted")
STYLES = ("cartoon", "noisy", "dark", "blurred")
"""Styles of the ID-text / OOD-image set (the target task uses "plain")."""

REFERENCE_SIZE = 56
"""Image size the pixel sizes below are given for; other sizes scale them."""
BACKGROUNDS = {"plain": (236, 236, 232), "v2": (244, 235, 214), "dark": (28, 28, 34)}
PATTERN_PERIOD = 3
"""Stripe / dot width in pixels at the reference size."""
TINT = 0.38
"""Share of the object colour in the gaps of striped and dotted textures (the rest is white)."""


@dataclass(frozen=True)
class ToyClass:
    """One class of the toy target task."""

    shape: str
    """One of ``SHAPES``."""
    colour: str
    """One of ``COLOURS``."""
    texture: str
    """One of ``TEXTURES``."""

    @property
    def name(self) -> str:
        return f"{self.colour} {self.texture} {self.shape}"

    def shared_attributes(self, other: ToyClass) -> int:
        return (self.shape == other.shape) + (self.colour == other.colour) + (self.texture == other.texture)


TOY_CLASSES = tuple(ToyClass(shape, colour, texture) for shape in SHAPES for colour in COLOURS for texture in TEXTURES)
"""The 48 classes, in a fixed order (class index = position)."""


def attribute_similarity() -> np.ndarray:
    """Class x class similarity: the number of shared attributes (0..3)."""
    return np.array([[a.shared_attributes(b) for b in TOY_CLASSES] for a in TOY_CLASSES], dtype=np.float64)


@dataclass(frozen=True)
class Placement:
    """One object of a scene, in reference-size pixels."""

    cx: int
    """Centre x."""
    cy: int
    """Centre y."""
    size: int
    """Width of the object's bounding box."""


@dataclass(frozen=True)
class Scene:
    """What a picture shows; equal scenes render to the same picture (except noisy backgrounds)."""

    class_index: int
    """Index into ``TOY_CLASSES``."""
    placements: tuple[Placement, ...]
    """The copies of the object (one to four)."""
    variant: str = "plain"
    """Renderer: "plain" (target task) or "v2" (shifted sizes, positions, background)."""
    style: str = "plain"
    """"plain" or one of ``STYLES``."""

    def split_bucket(self, buckets: int, image_size: int) -> int:
        """A stable hash bucket of what the picture shows (class, renderer, style and object pixels).

        Scenes that render to the same picture (e.g. squares whose sizes round alike) get the
        same bucket, so splitting by bucket keeps every picture in one split.
        """
        key = repr((self.class_index, self.variant, self.style)).encode() + scene_mask(self, image_size).tobytes()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % buckets


def _shape_mask(shape: str, placement: Placement, scale: float, image_size: int) -> np.ndarray:
    mask = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, half = placement.cx * scale, placement.cy * scale, placement.size * scale / 2
    if shape == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=255)
    elif shape == "square":
        side = half * 0.88
        draw.rectangle((cx - side, cy - side, cx + side, cy + side), fill=255)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half * 0.85), (cx + half, cy + half * 0.85)], fill=255)
    elif shape == "cross":
        arm = half * 0.38
        draw.rectangle((cx - half, cy - arm, cx + half, cy + arm), fill=255)
        draw.rectangle((cx - arm, cy - half, cx + arm, cy + half), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(mask) > 127


@lru_cache(maxsize=4096)
def scene_mask(scene: Scene, image_size: int) -> np.ndarray:
    """Pixels covered by the scene's objects (read-only, cached)."""
    scale = image_size / REFERENCE_SIZE
    shape = TOY_CLASSES[scene.class_index].shape
    mask = np.zeros((image_size, image_size), bool)
    for placement in scene.placements:
        mask |= _shape_mask(shape, placement, scale, image_size)
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=8)
def _texture_patterns(image_size: int) -> dict[str, np.ndarray]:
    period = max(2, round(PATTERN_PERIOD * image_size / REFERENCE_SIZE))
    ys, xs = np.mgrid[0:image_size, 0:image_size]
    stripes = (ys // period) % 2 == 0
    return {
        "solid": np.ones((image_size, image_size), bool),
        "striped": stripes,
        "dotted": stripes & ((xs // period) % 2 == 0),
    }


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    """The RGB picture of ``scene`` (``rng`` only draws noisy backgrounds)."""
    toy_class = TOY_CLASSES[scene.class_index]
    scale = image_size / REFERENCE_SIZE
    background = BACKGROUNDS.get(scene.style) or BACKGROUNDS.get(scene.variant) or BACKGROUNDS["plain"]
    pixels = np.empty((image_size, image_size, 3), dtype=np.float32)
    pixels[:] = background
    if scene.style == "noisy":
        pixels[:] = rng.integers(110, 256, size=(image_size, image_size, 1))
    mask = scene_mask(scene, image_size)
    colour = np.array(COLOURS[toy_class.colour], dtype=np.float32)
    white = np.array((255, 255, 255), dtype=np.float32)
    gap = white if scene.style == "cartoon" else TINT * colour + (1 - TINT) * white
    pattern = _texture_patterns(image_size)[toy_class.texture]
    pixels[mask & pattern] = colour
    pixels[mask & ~pattern] = gap
    if scene.style == "cartoon":
        eroded = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(5))) > 127
        pixels[mask & ~eroded] = (20, 20, 20)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if scene.style == "blurred":
        image = image.filter(ImageFilter.GaussianBlur(radius=1.2 * scale))
    return image


INK_COLOURS = ((30, 30, 30), (40, 40, 150), (140, 30, 30), (30, 110, 50), (100, 40, 130), (120, 70, 20))
PAPER_COLOURS = ((245, 245, 240), (240, 236, 220), (226, 238, 246), (238, 226, 236))


def digit_image(pixels_8x8: np.ndarray, image_size: int, rng: np.random.Generator) -> Image.Image:
    """A scikit-learn 8 x 8 digit (values 0..16) scaled to ``image_size`` in random ink on paper."""
    ink = np.array(INK_COLOURS[rng.integers(len(INK_COLOURS))], dtype=np.float32)
    paper = np.array(PAPER_COLOURS[rng.integers(len(PAPER_COLOURS))], dtype=np.float32)
    alpha = Image.fromarray((np.asarray(pixels_8x8, dtype=np.float32) / 16 * 255).astype(np.uint8), "L")
    alpha = (
        np.asarray(alpha.resize((image_size, image_size), Image.Resampling.NEAREST), dtype=np.float32)[..., None] / 255
    )
    return Image.fromarray((paper * (1 - alpha) + ink * alpha).astype(np.uint8), "RGB")


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes (fast compression: the images are tiny)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
