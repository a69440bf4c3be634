"""Flat garment images with fine detail (stripes, checks, dots, text-like glyphs, a logo) for synthetic try-on.

A garment is drawn on white at twice the target size and box-filtered down, so edges and stripes are antialiased
and a bilinear warp of the flat image reproduces the worn garment faithfully. Its silhouette is a T-shirt or a tank
top in a fixed canonical layout: collar centre at (0.5 W, ``COLLAR_Y`` H), hem at ``HEM_Y`` H; the person renderer
maps its torso onto that layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from leffa.errors import LeffaError

COLLAR_Y = 0.14
HEM_Y = 0.86
BODY_HALF_WIDTH = 0.27  # of the image width, at the chest
SUPERSAMPLE = 2

_GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class Fabric:
    """How the synthetic fabrics look. ``pattern_scale`` multiplies the period of the garments' and trousers'
    patterns (coarser for small images: a 1/4 autoencoder cannot carry stripes finer than its latent grid; see
    docs/synthetic.md); ``shading`` (0-1) adds a colour ramp across each garment (``shade``), so every patch of a
    garment differs from the others. Neither draws random numbers, so a sample keeps its person, fit and flow."""

    pattern_scale: float = 1.0
    shading: float = 0.0

    def __post_init__(self) -> None:
        if not 0.25 <= self.pattern_scale <= 8:
            raise LeffaError(
                f"pattern_scale {self.pattern_scale:g}: choose a value from 0.25 to 8", option="pattern_scale"
            )
        if not 0 <= self.shading <= 1:
            raise LeffaError(f"shading {self.shading:g}: choose a value from 0 to 1", option="shading")


@dataclass
class Garment:
    """A flat garment on white: RGB ``image`` (H, W, 3) float in [0, 1] and its silhouette ``alpha`` (H, W)."""

    image: np.ndarray
    alpha: np.ndarray
    body_half_width: float  # in pixels, at the chest
    collar: tuple[float, float]  # (x, y) pixels
    hem_y: float


def _random_colour(rng: np.random.Generator, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    return rng.uniform(low, high, size=3)


def _contrasting(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A colour far enough from ``colour`` that a pattern between the two stays visible."""
    for _ in range(16):
        other = _random_colour(rng)
        if np.abs(other - colour).sum() > 0.9:
            return other
    return 1.0 - colour


def _silhouette(height: int, width: int, sleeves: bool, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Polygon of the garment outline in pixels (clockwise from the left collar corner)."""
    cx = width / 2
    top, hem = COLLAR_Y * height, HEM_Y * height
    chest = BODY_HALF_WIDTH * width
    shoulder = chest * rng.uniform(1.0, 1.12)
    waist = chest * rng.uniform(0.9, 1.05)
    neck = chest * rng.uniform(0.32, 0.42)
    neck_depth = height * rng.uniform(0.03, 0.07)
    armpit = top + height * rng.uniform(0.16, 0.2)
    left = [(cx - neck, top - 0.01 * height), (cx - shoulder, top + 0.03 * height)]
    if sleeves:
        length = height * rng.uniform(0.12, 0.18)
        angle = np.deg2rad(rng.uniform(25, 45))  # below the horizontal
        sx, sy = cx - shoulder, top + 0.03 * height
        ax, ay = cx - chest, armpit
        dx, dy = -np.cos(angle) * length, np.sin(angle) * length
        left += [(sx + dx, sy + dy), (ax + dx * 0.55, ay + dy * 0.55 + 0.02 * height)]
    left += [(cx - chest, armpit), (cx - waist, hem)]
    right = [(2 * cx - x, y) for x, y in reversed(left)]
    neckline = [(cx + neck * np.cos(a), top - 0.01 * height + neck_depth * np.sin(a)) for a in np.linspace(0, np.pi, 9)]
    return left + right + neckline[1:-1]


def _pattern(height: int, width: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A repeating fabric pattern (H, W, 3) in [0, 1]: stripes, checks or dots, with a soft edge; ``scale``
    multiplies the period (7-16 px of the flat garment at scale 1)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    base = _random_colour(rng).astype(np.float32)
    second = _contrasting(rng, base).astype(np.float32)
    kind = rng.choice(["stripes", "checks", "dots", "stripes"])
    period = np.float32(rng.uniform(7, 16) * SUPERSAMPLE * scale)
    angle = np.float32(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    if kind == "stripes":
        weight = 0.5 + 0.5 * np.tanh(2.5 * np.sin(2 * np.pi * u / period))
    elif kind == "checks":
        a = 0.5 + 0.5 * np.tanh(2.5 * np.sin(2 * np.pi * u / period))
        b = 0.5 + 0.5 * np.tanh(2.5 * np.sin(2 * np.pi * v / period))
        weight = 0.5 * (a + b)
    else:
        cu = (np.mod(u, period) - period / 2) / period
        cv = (np.mod(v, period) - period / 2) / period
        weight = np.clip((0.3 - np.hypot(cu, cv)) * 12, 0, 1)
    return base * (1 - weight[..., None]) + second * weight[..., None]


def shade(fabric: np.ndarray, strength: float) -> np.ndarray:
    """Add a colour ramp across the fabric (H, W, 3) in [0, 1]: red rises left to right and green top to bottom by
    ``strength`` each. It makes every patch of a two-colour pattern differ from the others, so a photometric match
    (what the Leffa loss rewards) implies the geometric one; with two flat colours any same-coloured stripe matches
    (docs/benchmarks.md, "Leffa ablation in miniature"). Draws no random numbers; 0 returns ``fabric`` unchanged."""
    if strength == 0:
        return fabric
    height, width = fabric.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    shaded = fabric.copy()
    shaded[..., 0] += strength * (xs / width - 0.5)
    shaded[..., 1] += strength * (ys / height - 0.5)
    return np.clip(shaded, 0, 1)


def _glyph_stamp(rng: np.random.Generator, scale: int) -> Image.Image:
    """A row or two of random capital letters and digits from PIL's built-in bitmap font, scaled up blockily."""
    font = (
        ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else ImageFont.load_default()
    )
    lines = ["".join(rng.choice(list(_GLYPHS), size=rng.integers(3, 7))) for _ in range(rng.integers(1, 3))]
    text = "\n".join(lines)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font)
    stamp = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2), 0)  # whole pixels: the origin is (0, 0)
    ImageDraw.Draw(stamp).multiline_text((1 - left, 1 - top), text, fill=255, font=font)
    return stamp.resize((stamp.width * scale, stamp.height * scale), Image.Resampling.NEAREST)


def _draw_logo(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, colour, rng) -> None:
    kind = rng.choice(["circle", "star", "triangle", "ring"])
    x, y = centre
    if kind in ("circle", "ring"):
        draw.ellipse(
            [x - radius, y - radius, x + radius, y + radius],
            fill=None if kind == "ring" else colour,
            outline=colour,
            width=max(2, int(radius / 3)),
        )
    else:
        points = 5 if kind == "star" else 3
        angles = np.linspace(-np.pi / 2, 1.5 * np.pi, 2 * points if kind == "star" else points, endpoint=False)
        radii = (
            [radius if i % 2 == 0 else radius * 0.45 for i in range(len(angles))] if kind == "star" else [radius] * 3
        )
        draw.polygon([(x + r * np.cos(a), y + r * np.sin(a)) for a, r in zip(angles, radii)], fill=colour)


def draw_garment(height: int, width: int, rng: np.random.Generator, fabric: Fabric = Fabric()) -> Garment:
    """Draw one flat garment (seeded by ``rng``) on a white ``height`` x ``width`` canvas in the ``fabric`` look
    (the same random draws whatever the look)."""
    big_h, big_w = height * SUPERSAMPLE, width * SUPERSAMPLE
    sleeves = bool(rng.random() < 0.7)
    outline = _silhouette(big_h, big_w, sleeves, rng)
    mask = Image.new("L", (big_w, big_h), 0)
    ImageDraw.Draw(mask).polygon(outline, fill=255)

    cloth = Image.fromarray(
        (shade(_pattern(big_h, big_w, rng, fabric.pattern_scale), fabric.shading) * 255).astype(np.uint8)
    )
    draw = ImageDraw.Draw(cloth)
    ink = tuple(int(c) for c in (_random_colour(rng) * 255))
    chest_y = (COLLAR_Y + 0.2) * big_h
    stamp = _glyph_stamp(rng, scale=max(2, round(big_h / 128)))
    if stamp.width < 0.4 * big_w:
        box = Image.new("RGB", (stamp.width + 8, stamp.height + 8), tuple(int(255 - c * 0.3) for c in ink))
        box.paste(ink, (4, 4), stamp)
        cloth.paste(box, (int(big_w / 2 - box.width / 2), int(chest_y)))
    logo_x = big_w / 2 + rng.choice([-1, 1]) * BODY_HALF_WIDTH * big_w * 0.5
    _draw_logo(draw, (logo_x, chest_y - 0.05 * big_h), 0.035 * big_h, tuple(int(255 - c) for c in ink), rng)

    small_alpha = np.asarray(mask.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255
    small_fabric = np.asarray(cloth.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255
    image = small_fabric * small_alpha[..., None] + (1 - small_alpha[..., None])
    return Garment(
        image=image.astype(np.float32),
        alpha=small_alpha,
        body_half_width=BODY_HALF_WIDTH * width,
        collar=(width / 2 - 0.5, COLLAR_Y * height - 0.5),
        hem_y=HEM_Y * height - 0.5,
    )
