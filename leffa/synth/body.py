"""Procedural people: a skeleton, rigid body parts drawn back to front, textures fixed to each part.

Every part has a local frame (origin ``a``, unit axis ``e`` towards ``b``, normal ``n``); a pixel's local
coordinates ``(s, r)`` are its offsets along ``e`` and ``n``. Colours are a function of (part, s, r) only, so the
same person in two poses has exactly known correspondences: a visible pixel of part k at (s, r) in one pose sits at
``a_k + s e_k + r n_k`` in the other. Everything is vectorised numpy over the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from leffa.synth.garment import Garment

# DensePose part indices (front views) and LIP / VITON-HD parsing labels of our parts.
DENSEPOSE = {
    "torso": 2,
    "right_hand": 3,
    "left_hand": 4,
    "left_foot": 5,
    "right_foot": 6,
    "right_upper_leg": 9,
    "left_upper_leg": 10,
    "right_lower_leg": 13,
    "left_lower_leg": 14,
    "left_upper_arm": 15,
    "right_upper_arm": 16,
    "left_lower_arm": 19,
    "right_lower_arm": 20,
    "head": 23,
}
PARSE_LABELS = {
    "background": 0,
    "hair": 2,
    "upper_clothes": 5,
    "pants": 9,
    "face": 13,
    "left_arm": 14,
    "right_arm": 15,
    "left_leg": 16,
    "right_leg": 17,
    "left_shoe": 18,
    "right_shoe": 19,
}
# Back-to-front drawing order. The person faces the viewer: their right side is on the image's left.
DRAW_ORDER = [
    "right_upper_leg",
    "left_upper_leg",
    "right_lower_leg",
    "left_lower_leg",
    "right_foot",
    "left_foot",
    "torso",
    "head",
    "right_upper_arm",
    "left_upper_arm",
    "right_lower_arm",
    "left_lower_arm",
    "right_hand",
    "left_hand",
]
PART_INDEX = {name: index + 1 for index, name in enumerate(DRAW_ORDER)}  # 0 = background


@dataclass
class Appearance:
    """What stays fixed for one person across poses: proportions (fractions of image height) and colours."""

    skin: np.ndarray
    hair: np.ndarray
    pants: np.ndarray
    pants_second: np.ndarray
    shoes: np.ndarray
    eyes: np.ndarray
    sizes: dict = field(default_factory=dict)
    background: tuple = ()
    pattern_scale: float = 1.0  # multiplies the trousers' check period (5% of the image height at 1)


@dataclass
class Part:
    name: str
    kind: str  # "capsule" (tapered), "trapezoid", "ellipse"
    a: np.ndarray
    b: np.ndarray
    radius_a: float
    radius_b: float

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.b - self.a))

    @property
    def axis(self) -> np.ndarray:
        return (self.b - self.a) / max(self.length, 1e-6)

    @property
    def normal(self) -> np.ndarray:
        e = self.axis
        return np.array([-e[1], e[0]])

    def local(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = xs - self.a[0], ys - self.a[1]
        e, n = self.axis, self.normal
        return dx * e[0] + dy * e[1], dx * n[0] + dy * n[1]

    def to_image(self, s: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e, n = self.axis, self.normal
        return self.a[0] + s * e[0] + r * n[0], self.a[1] + s * e[1] + r * n[1]

    def bounds(self, height: int, width: int) -> tuple[slice, slice]:
        """Row and column slices of the image that can contain this part (its bounding box plus a margin)."""
        reach = max(self.radius_a, self.radius_b) + 1
        if self.kind == "ellipse":
            low, high = self.a - reach, self.a + reach
        else:
            low, high = np.minimum(self.a, self.b) - reach, np.maximum(self.a, self.b) + reach
        rows = slice(max(0, int(np.floor(low[1]))), min(height, int(np.ceil(high[1])) + 1))
        cols = slice(max(0, int(np.floor(low[0]))), min(width, int(np.ceil(high[0])) + 1))
        return rows, cols

    def radius(self, s: np.ndarray) -> np.ndarray:
        t = np.clip(s / max(self.length, 1e-6), 0, 1)
        return self.radius_a + (self.radius_b - self.radius_a) * t

    def inside_uv(self, s: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coverage mask and DensePose-style (U, V) in [0, 1] for local coordinates."""
        length = max(self.length, 1e-6)
        if self.kind == "ellipse":  # a = centre, radius_a along the axis, radius_b across
            inside = (s / self.radius_a) ** 2 + (r / self.radius_b) ** 2 <= 1
            return inside, np.clip(0.5 + 0.5 * s / self.radius_a, 0, 1), np.clip(0.5 + 0.5 * r / self.radius_b, 0, 1)
        width = self.radius(s)
        if self.kind == "trapezoid":
            inside = (s >= 0) & (s <= length) & (np.abs(r) <= width)
        else:
            clipped = np.clip(s, 0, length)
            inside = (s - clipped) ** 2 + r**2 <= width**2
        return inside, np.clip(s / length, 0, 1), np.clip(0.5 + 0.5 * r / width, 0, 1)


def random_appearance(rng: np.random.Generator) -> Appearance:
    tone = rng.uniform(0.25, 1.0)
    skin = np.array([0.45 + 0.5 * tone, 0.3 + 0.45 * tone, 0.2 + 0.4 * tone]) * rng.uniform(0.9, 1.05)
    sizes = {
        "head_y": rng.uniform(0.09, 0.11),
        "head_ry": rng.uniform(0.06, 0.07),
        "head_rx": rng.uniform(0.045, 0.052),
        "neck_y": rng.uniform(0.17, 0.19),
        "hip_y": rng.uniform(0.5, 0.54),
        "shoulder": rng.uniform(0.105, 0.125),
        "hip": rng.uniform(0.075, 0.09),
        "waist": rng.uniform(0.08, 0.095),
        "upper_arm": rng.uniform(0.15, 0.17),
        "lower_arm": rng.uniform(0.13, 0.15),
        "arm_r": rng.uniform(0.022, 0.028),
        "upper_leg": rng.uniform(0.2, 0.22),
        "lower_leg": rng.uniform(0.19, 0.21),
        "leg_r": rng.uniform(0.035, 0.042),
        "hip_offset": rng.uniform(0.04, 0.05),
        "foot": rng.uniform(0.045, 0.055),
    }
    top, bottom = rng.uniform(0.55, 0.95, size=3), rng.uniform(0.35, 0.9, size=3)
    return Appearance(
        skin=np.clip(skin, 0, 1),
        hair=rng.uniform(0.02, 0.5, size=3) * rng.uniform(0.3, 1.0),
        pants=rng.uniform(0.05, 0.7, size=3),
        pants_second=rng.uniform(0.05, 0.9, size=3),
        shoes=rng.uniform(0.0, 0.4, size=3),
        eyes=rng.uniform(0.0, 0.3, size=3),
        sizes=sizes,
        background=(top, bottom, rng.uniform(0.7, 0.85)),
    )


def random_pose(rng: np.random.Generator, sleeve_friendly: bool = False) -> dict:
    """Joint angles (degrees) and a small body shift; ``sleeve_friendly`` keeps upper arms near a T-shirt's sleeves."""
    arm_low, arm_high = (20, 40) if sleeve_friendly else (12, 70)
    return {
        "shift_x": rng.uniform(-0.04, 0.04),
        "shift_y": rng.uniform(-0.015, 0.015),
        "tilt": rng.uniform(-4, 4),
        "head_tilt": rng.uniform(-10, 10),
        "right_arm": rng.uniform(arm_low, arm_high),
        "left_arm": rng.uniform(arm_low, arm_high),
        "right_elbow": rng.uniform(-30, 70),
        "left_elbow": rng.uniform(-30, 70),
        "right_leg": rng.uniform(-2, 14),
        "left_leg": rng.uniform(-2, 14),
        "right_knee": rng.uniform(-12, 12),
        "left_knee": rng.uniform(-12, 12),
    }


def _direction(degrees: float) -> np.ndarray:
    """Unit vector pointing down (+y) rotated by ``degrees`` towards +x."""
    angle = np.deg2rad(degrees)
    return np.array([np.sin(angle), np.cos(angle)])


def build_parts(look: Appearance, pose: dict, height: int, width: int) -> tuple[dict[str, Part], dict]:
    """The person's parts in image pixels, and named joints for the keypoint file."""
    z = look.sizes
    unit = float(height)
    centre_x = width / 2 + pose["shift_x"] * unit
    neck = np.array([centre_x, (z["neck_y"] + pose["shift_y"]) * unit])
    down = _direction(pose["tilt"])
    side = np.array([down[1], -down[0]])  # +x in the image for an upright body
    mid_hip = neck + down * (z["hip_y"] - z["neck_y"]) * unit
    joints = {"neck": neck, "mid_hip": mid_hip}
    head_axis = _direction(pose["tilt"] + pose["head_tilt"])
    head_centre = neck - head_axis * (z["neck_y"] - z["head_y"]) * unit
    parts = {
        "torso": Part("torso", "trapezoid", neck - down * 0.01 * unit, mid_hip, z["shoulder"] * unit, z["hip"] * unit),
        "head": Part("head", "ellipse", head_centre, head_centre + head_axis, z["head_ry"] * unit, z["head_rx"] * unit),
    }
    joints["head"] = head_centre
    for side_name, sign in (("right", -1.0), ("left", 1.0)):
        shoulder = neck + side * sign * (z["shoulder"] - z["arm_r"]) * unit + down * 0.02 * unit
        elbow = shoulder + _direction(pose["tilt"] + sign * pose[f"{side_name}_arm"]) * z["upper_arm"] * unit
        wrist = (
            elbow
            + _direction(pose["tilt"] + sign * (pose[f"{side_name}_arm"] - pose[f"{side_name}_elbow"]))
            * z["lower_arm"]
            * unit
        )
        hand = wrist + (wrist - elbow) / np.linalg.norm(wrist - elbow) * 0.035 * unit
        hip = mid_hip + side * sign * z["hip_offset"] * unit
        knee = hip + _direction(pose["tilt"] + sign * pose[f"{side_name}_leg"]) * z["upper_leg"] * unit
        ankle = (
            knee
            + _direction(pose["tilt"] + sign * (pose[f"{side_name}_leg"] - pose[f"{side_name}_knee"]))
            * z["lower_leg"]
            * unit
        )
        toe = ankle + np.array([sign * z["foot"] * unit * 0.6, 0.02 * unit])
        r_arm, r_leg = z["arm_r"] * unit, z["leg_r"] * unit
        parts[f"{side_name}_upper_arm"] = Part(
            f"{side_name}_upper_arm", "capsule", shoulder, elbow, r_arm, r_arm * 0.85
        )
        parts[f"{side_name}_lower_arm"] = Part(
            f"{side_name}_lower_arm", "capsule", elbow, wrist, r_arm * 0.85, r_arm * 0.7
        )
        parts[f"{side_name}_hand"] = Part(f"{side_name}_hand", "capsule", wrist, hand, r_arm * 0.8, r_arm * 0.8)
        parts[f"{side_name}_upper_leg"] = Part(f"{side_name}_upper_leg", "capsule", hip, knee, r_leg, r_leg * 0.8)
        parts[f"{side_name}_lower_leg"] = Part(
            f"{side_name}_lower_leg", "capsule", knee, ankle, r_leg * 0.8, r_leg * 0.6
        )
        parts[f"{side_name}_foot"] = Part(f"{side_name}_foot", "capsule", ankle, toe, r_leg * 0.6, r_leg * 0.5)
        joints.update(
            {
                f"{side_name}_shoulder": shoulder,
                f"{side_name}_elbow": elbow,
                f"{side_name}_wrist": wrist,
                f"{side_name}_hip": hip,
                f"{side_name}_knee": knee,
                f"{side_name}_ankle": ankle,
                f"{side_name}_toe": toe,
            }
        )
    return parts, joints


def background(look: Appearance, height: int, width: int) -> np.ndarray:
    """A studio-like backdrop: vertical gradient with a soft floor line; identical in every pose of one person."""
    top, bottom, floor = look.background
    ys = (np.arange(height, dtype=np.float32)[:, None, None] + 0.5) / height
    wall = top * (1 - 0.3 * ys) + 0.0 * ys
    ground = bottom * (0.8 + 0.2 * ys)
    blend = 1 / (1 + np.exp(-(ys - floor) * 60))
    image = wall * (1 - blend) + ground * blend
    return np.broadcast_to(image, (height, width, 3)).astype(np.float32)


def _texture(name: str, look: Appearance, s: np.ndarray, r: np.ndarray, part: Part, unit: float) -> np.ndarray:
    """Colour of ``part`` at local coordinates (s, r) in pixels, independent of pose."""
    width = np.maximum(part.radius(s), 1e-6) if part.kind != "ellipse" else part.radius_b
    shade = 1 - 0.18 * np.clip(r / width, -1, 1) ** 2
    if name.endswith(("upper_leg", "lower_leg")):
        offset = part.length if name.endswith("lower_leg") else 0.0
        period = 0.05 * unit * look.pattern_scale
        check = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * (s + offset) / period) * np.sin(2 * np.pi * r / period))
        colour = look.pants[None] * (1 - 0.35 * check[:, None]) + look.pants_second[None] * 0.35 * check[:, None]
    elif name.endswith("foot"):
        colour = np.broadcast_to(look.shoes, (s.size, 3))
    elif name == "head":
        rel_s, rel_r = s / part.radius_a, r / part.radius_b
        hair = np.clip((-0.25 - rel_s) * 8 + 0.25 * np.sin(rel_r * 8), 0, 1)[:, None]
        eye = np.clip(
            1
            - (np.minimum(np.hypot(rel_r - 0.38, rel_s + 0.05), np.hypot(rel_r + 0.38, rel_s + 0.05)) / 0.13) ** 2
            * 1.0,
            0,
            1,
        )
        mouth = np.clip(1 - (np.hypot(rel_r / 0.3, (rel_s - 0.5) / 0.06)) ** 2, 0, 1)
        colour = look.skin[None] * (1 - hair) + look.hair[None] * hair
        colour = colour * (1 - eye[:, None]) + look.eyes[None] * eye[:, None]
        colour = colour * (1 - 0.5 * mouth[:, None]) + np.array([0.6, 0.15, 0.15])[None] * 0.5 * mouth[:, None]
        return np.clip(colour * shade[:, None], 0, 1)
    else:
        colour = np.broadcast_to(look.skin, (s.size, 3))
    return np.clip(colour * shade[:, None], 0, 1)


@dataclass
class Rendering:
    """One rendered person: RGB (H, W, 3) float, part index map, local coordinates and (U, V) per pixel."""

    image: np.ndarray
    part_map: np.ndarray  # (H, W) int, 0 = background, else PART_INDEX
    s: np.ndarray
    r: np.ndarray
    u: np.ndarray
    v: np.ndarray
    parts: dict
    joints: dict


def render(
    look: Appearance,
    parts: dict[str, Part],
    joints: dict,
    height: int,
    width: int,
    torso_garment: Garment | None = None,
) -> Rendering:
    """Draw the parts back to front; with ``torso_garment`` the torso wears it (used for pose pairs)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    part_map = np.zeros((height, width), dtype=np.int32)
    s_map, r_map = np.zeros((height, width)), np.zeros((height, width))
    u_map, v_map = np.zeros((height, width)), np.zeros((height, width))
    for name in DRAW_ORDER:
        part = parts[name]
        rows, cols = part.bounds(height, width)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        s, r = part.local(xs[rows, cols], ys[rows, cols])
        inside, u, v = part.inside_uv(s, r)
        window = (rows, cols)
        part_map[window][inside] = PART_INDEX[name]
        for target, values in ((s_map, s), (r_map, r), (u_map, u), (v_map, v)):
            target[window][inside] = values[inside]
    image = background(look, height, width).copy()
    for name in DRAW_ORDER:
        where = part_map == PART_INDEX[name]
        if not where.any():
            continue
        s, r = s_map[where], r_map[where]
        colour = _texture(name, look, s, r, parts[name], float(height))
        if name == "torso" and torso_garment is not None:
            gx, gy = torso_to_garment(parts["torso"], torso_garment, s, r)
            fabric = sample_bilinear(torso_garment.image, gx, gy)
            alpha = sample_bilinear(torso_garment.alpha[..., None], gx, gy)[:, 0] > 0.5
            colour = np.where(alpha[:, None], fabric, colour)
        image[where] = colour
    return Rendering(image, part_map, s_map, r_map, u_map, v_map, parts, joints)


def torso_to_garment(torso: Part, garment: Garment, s: np.ndarray, r: np.ndarray, fit: dict | None = None):
    """Map torso-local coordinates to flat-garment pixel coordinates: collar on the neck, chest width on the chest.

    ``fit`` adds the try-on deformation: a length/width scale and a smooth sinusoidal displacement (pixels).
    """
    fit = fit or {}
    chest = torso.radius_a * fit.get("width", 1.08)
    kx = garment.body_half_width / chest
    ky = (garment.hem_y - garment.collar[1]) / (torso.length * fit.get("length", 0.98))
    gx = garment.collar[0] - r * kx  # the torso normal points to the image left
    gy = garment.collar[1] + (s - 0.01 * fit.get("unit", 0.0)) * ky
    for amplitude, fx, fy, phase, axis in fit.get("waves", ()):
        wave = amplitude * np.sin(
            2 * np.pi * (fx * gx / garment.image.shape[1] + fy * gy / garment.image.shape[0]) + phase
        )
        if axis == 0:
            gx = gx + wave
        else:
            gy = gy + wave
    return gx, gy


def sample_bilinear(image: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``image`` (H, W, C) at pixel coordinates (pixel centres at integers), zeros outside.

    Matches ``grid_sample(..., align_corners=False, padding_mode="zeros")`` at ``x = (2 px + 1) / W - 1``.
    """
    height, width = image.shape[:2]
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = (px - x0)[..., None], (py - y0)[..., None]
    out = np.zeros(px.shape + (image.shape[2],), dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            valid = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = image[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
            out += np.where(valid[..., None], values, 0) * wx * wy
    return out
