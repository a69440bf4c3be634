"""Synthetic people with known ground-truth correspondence, in the folder layouts the training datasets read.

Try-on (VITON-HD-like): a flat garment on white, and a person wearing it under a known smooth deformation (an
affine fit of the garment's collar and chest to the torso plus sinusoidal waves); every garment pixel of the person
knows its coordinate in the flat garment image. Pose (DeepFashion-like): one person in two articulated poses; every
visible person pixel of the target knows where the same body point is in the reference.

Ground-truth flow (``gt-flow/*.npy``): float32 (H, W, 2), for each target pixel the (x, y) coordinate in the
reference in ``grid_sample`` units with ``align_corners=False`` (``x = (2 px + 1) / W - 1``), NaN where the pixel has
no correspondence. ``gt_warp(reference, flow)`` rebuilds the target region from the reference.

Every sample is drawn from its own generator seeded by (seed, split, index), so a sample does not depend on how
many others are drawn with it. See docs/synthetic.md.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from leffa.atomic import atomic_path
from leffa.errors import LeffaError
from leffa.preprocess.openpose import coco_18, draw_skeleton
from leffa.synth.body import (
    DENSEPOSE,
    PARSE_LABELS,
    PART_INDEX,
    Appearance,
    build_parts,
    random_appearance,
    random_pose,
    render,
    sample_bilinear,
    torso_to_garment,
)
from leffa.synth.garment import BODY_HALF_WIDTH, Fabric, Garment, draw_garment

TASKS = ("vton", "pose")
SPLITS = ("train", "test")
JPEG_QUALITY = 95  # with 4:4:4 chroma: the stripes' colour edges survive (see docs/synthetic.md)
# IUV PNG in the layout leffa pose / upstream read (leffa.images.iuv_tensor): R = U * 255, G = V * 255, B = part index
_SPLIT_CODE = {"train": 0, "test": 1}
_NAME_TO_INDEX = {name: index for name, index in PART_INDEX.items()}
_DENSEPOSE_BY_PART = np.zeros(len(PART_INDEX) + 1, dtype=np.int32)
for _name, _index in PART_INDEX.items():
    _DENSEPOSE_BY_PART[_index] = DENSEPOSE[_name]


@dataclass
class Sample:
    """One generated example as arrays (images float in [0, 1]); ``flow`` is the target's ground truth."""

    name: str
    target: np.ndarray  # person image (vton) / person in the target pose (pose)
    reference: np.ndarray  # flat garment (vton) / person in the reference pose (pose)
    flow: np.ndarray  # (H, W, 2) float32, NaN where no correspondence
    mask: np.ndarray  # (H, W) bool: vton agnostic mask (region to regenerate); pose all ones
    region: np.ndarray  # (H, W) bool: pixels that have a correspondence (garment region for vton)
    densepose_iuv: np.ndarray  # (H, W, 3) uint8 of the target: U * 255, V * 255, part index
    parse: np.ndarray | None = None  # (H, W) uint8 LIP labels (vton)
    keypoints: list | None = None  # OpenPose BODY_25 flat [x, y, c] * 25 (vton)
    reference_iuv: np.ndarray | None = None  # (pose) DensePose IUV of the reference image


# -- helpers shared with the viz-flow and eval tools -----------------------------------------------------------


def load_gt_flow(path: str | Path) -> np.ndarray:
    """Read a ground-truth flow file: float32 (H, W, 2), (x, y) in [-1, 1] (align_corners=False), NaN = none."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: file not found (ground-truth flow)")
    try:
        flow = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise LeffaError(f"{path}: not a readable .npy flow file ({error})") from None
    if flow.ndim != 3 or flow.shape[-1] != 2 or not np.issubdtype(flow.dtype, np.floating):
        raise LeffaError(f"{path}: expected a float (H, W, 2) flow, found {flow.dtype} {tuple(flow.shape)}")
    return flow.astype(np.float32, copy=False)


def gt_warp(reference, flow: np.ndarray) -> np.ndarray:
    """Warp ``reference`` (PIL image or (H, W, C) array) by ``flow`` like the Leffa loss does (bilinear,
    ``align_corners=False``). Returns float32 (H', W', C) in the reference's value range, NaN where flow is NaN."""
    array = np.asarray(reference, dtype=np.float32)
    if array.ndim == 2:
        array = array[..., None]
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    valid = ~np.isnan(flow).any(axis=-1)
    grid = torch.from_numpy(np.nan_to_num(flow, nan=-2.0).astype(np.float32))[None]
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = warped[0].permute(1, 2, 0).numpy().copy()
    out[~valid] = np.nan
    return out


def pixels_to_grid(px: np.ndarray, py: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel coordinates (centres at integers) -> grid_sample units with align_corners=False."""
    return np.stack([(2 * px + 1) / width - 1, (2 * py + 1) / height - 1], axis=-1).astype(np.float32)


# -- conditions ---------------------------------------------------------------------------------------------------


def _iuv(rendering) -> np.ndarray:
    part = _DENSEPOSE_BY_PART[rendering.part_map]
    iuv = np.stack([rendering.u * 255, rendering.v * 255, part], axis=-1)
    iuv[rendering.part_map == 0] = 0
    return np.round(iuv).astype(np.uint8)


def densepose_colours(iuv: np.ndarray) -> np.ndarray:
    """A coloured DensePose-style rendering (like VITON-HD's image-densepose) from an IUV array: hue per part,
    brightness from U, background black."""
    part = iuv[..., 2].astype(np.float32)
    t = part / 24.0
    palette = np.stack(
        [
            0.5 + 0.5 * np.cos(2 * np.pi * (t + 0.0)),
            0.5 + 0.5 * np.cos(2 * np.pi * (t + 0.33)),
            0.5 + 0.5 * np.cos(2 * np.pi * (t + 0.67)),
        ],
        axis=-1,
    )
    colour = palette * (0.6 + 0.4 * iuv[..., 0:1].astype(np.float32) / 255)
    colour[part == 0] = 0
    return colour


def _parse_map(rendering, garment_region: np.ndarray) -> np.ndarray:
    part_map = rendering.part_map
    labels = np.zeros(part_map.shape, dtype=np.uint8)
    by_part = {
        "head": "face",
        "torso": "upper_clothes",
        "right_foot": "right_shoe",
        "left_foot": "left_shoe",
        "right_upper_leg": "pants",
        "left_upper_leg": "pants",
        "right_lower_leg": "pants",
        "left_lower_leg": "pants",
    }
    for name, index in PART_INDEX.items():
        if name in by_part:
            label = by_part[name]
        elif "arm" in name or "hand" in name:
            label = "left_arm" if name.startswith("left") else "right_arm"
        labels[part_map == index] = PARSE_LABELS[label]
    head = rendering.parts["head"]
    hair = (part_map == PART_INDEX["head"]) & (rendering.s / head.radius_a < -0.3)
    labels[hair] = PARSE_LABELS["hair"]
    exposed_torso = (part_map == PART_INDEX["torso"]) & ~garment_region
    labels[exposed_torso] = 10  # VITON-HD's "neck" / bare-torso label
    labels[garment_region] = PARSE_LABELS["upper_clothes"]
    return labels


BODY_25 = [
    "head",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "mid_hip",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
    "left_toe",
    "left_toe",
    "left_ankle",
    "right_toe",
    "right_toe",
    "right_ankle",
]


def _keypoints(rendering) -> list[float]:
    """OpenPose BODY_25 keypoints (x, y, confidence) from the skeleton; face points from the head ellipse."""
    joints = dict(rendering.joints)
    head = rendering.parts["head"]
    for name, (s, r) in {
        "head": (0.2, 0.0),
        "right_eye": (-0.05, -0.38),
        "left_eye": (-0.05, 0.38),
        "right_ear": (0.0, -1.0),
        "left_ear": (0.0, 1.0),
    }.items():
        x, y = head.to_image(np.array(s * head.radius_a), np.array(r * head.radius_b))
        joints[name] = np.array([float(x), float(y)])
    flat = []
    for name in BODY_25:
        x, y = joints[name]
        flat += [round(float(x), 2), round(float(y), 2), 0.9]
    return flat


# -- samples ------------------------------------------------------------------------------------------------------


def _generator(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[split], index])


@dataclass
class Outfit:
    """What one try-on sample draws (from its own generator): the person's look and pose, a garment and the fit."""

    look: Appearance
    garment: Garment
    pose: dict
    fit: dict


def draw_outfit(seed: int, split: str, index: int, height: int, width: int, fabric: Fabric = Fabric()) -> Outfit:
    """Sample ``index``'s person, garment and fit, always drawn in the same order from its generator."""
    rng = _generator(seed, split, index)
    look = random_appearance(rng)
    look.pattern_scale = fabric.pattern_scale
    garment = draw_garment(height, width, rng, fabric)
    pose = random_pose(rng, sleeve_friendly=True)
    fit = {
        "width": rng.uniform(1.0, 1.15),
        "length": rng.uniform(0.92, 1.05),
        "unit": float(height),
        "waves": [
            (
                rng.uniform(0.5, 2.0) * height / 256,
                rng.uniform(-1.5, 1.5),
                rng.uniform(0.5, 2.5),
                rng.uniform(0, 6.3),
                0,
            ),
            (
                rng.uniform(0.5, 2.0) * height / 256,
                rng.uniform(0.5, 2.5),
                rng.uniform(-1.5, 1.5),
                rng.uniform(0, 6.3),
                1,
            ),
        ],
    }
    return Outfit(look, garment, pose, fit)


def dress(
    outfit: Outfit, garment: Garment, height: int, width: int, name: str, keep_mask: np.ndarray | None = None
) -> Sample:
    """Render ``outfit``'s person wearing ``garment`` under the outfit's fit.

    ``keep_mask`` (H, W) bool, when given, is the region a try-on may change (the person's own agnostic mask):
    the garment is drawn only inside it and the returned sample keeps that mask, so everything outside it is
    exactly the person's photo (the unpaired ground truth). Without it the mask is grown from this garment.
    """
    look, pose, fit = outfit.look, outfit.pose, outfit.fit
    parts, joints = build_parts(look, pose, height, width)
    rendering = render(look, parts, joints, height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    s, r = parts["torso"].local(xs, ys)
    gx, gy = torso_to_garment(parts["torso"], garment, s, r, fit)
    covered = sample_bilinear(garment.alpha[..., None], gx, gy)[..., 0] > 0.5
    in_front = np.isin(
        rendering.part_map,
        [PART_INDEX[n] for n in ("head", "right_lower_arm", "left_lower_arm", "right_hand", "left_hand")],
    )
    region = covered & ~in_front
    if keep_mask is not None:
        region &= keep_mask
    person = rendering.image.copy()
    person[region] = sample_bilinear(garment.image, gx[region], gy[region])
    flow = np.full((height, width, 2), np.nan, dtype=np.float32)
    flow[region] = pixels_to_grid(gx[region], gy[region], height, width)

    if keep_mask is None:
        upper_body = np.isin(
            rendering.part_map, [PART_INDEX[n] for n in ("torso", "right_upper_arm", "left_upper_arm")]
        )
        grown = Image.fromarray(((region | upper_body) * 255).astype(np.uint8)).filter(
            ImageFilter.BoxBlur(max(1, round(height / 48)))
        )  # any coverage after a box blur = dilation by a square
        mask = (np.asarray(grown) > 0) & (rendering.part_map != PART_INDEX["head"]) | region
    else:
        mask = keep_mask
    return Sample(
        name=name,
        target=person,
        reference=garment.image,
        flow=flow,
        mask=mask,
        region=region,
        densepose_iuv=_iuv(rendering),
        parse=_parse_map(rendering, region),
        keypoints=_keypoints(rendering),
    )


def vton_sample(seed: int, split: str, index: int, height: int, width: int, fabric: Fabric = Fabric()) -> Sample:
    """A flat garment and a person wearing it; the flow maps garment pixels of the person into the garment image."""
    outfit = draw_outfit(seed, split, index, height, width, fabric)
    return dress(outfit, outfit.garment, height, width, f"{index:06d}")


def unpaired_partner(index: int, n: int) -> int:
    """The sample whose garment sample ``index`` wears in the unpaired set: the next one (a derangement for n > 1)."""
    return (index + 1) % n


def unpaired_sample(
    seed: int,
    split: str,
    index: int,
    partner: int,
    height: int,
    width: int,
    fabric: Fabric = Fabric(),
) -> Sample:
    """Sample ``index``'s person (same body, pose, background, trousers and agnostic mask) wearing sample
    ``partner``'s garment under ``index``'s fit; named ``PERSON__CLOTH``. The ground truth of unpaired try-on."""
    outfit = draw_outfit(seed, split, index, height, width, fabric)
    own = dress(outfit, outfit.garment, height, width, f"{index:06d}")
    garment = draw_outfit(seed, split, partner, height, width, fabric).garment
    return dress(outfit, garment, height, width, f"{index:06d}__{partner:06d}", keep_mask=own.mask)


def pose_sample(seed: int, split: str, index: int, height: int, width: int, fabric: Fabric = Fabric()) -> Sample:
    """One person in two poses; the flow maps each visible person pixel of the target into the reference."""
    rng = _generator(seed, split, index)
    look = random_appearance(rng)
    look.pattern_scale = fabric.pattern_scale
    # The torso wears the garment at about 1:1 pixel scale, so its detail survives being resampled twice.
    garment_width = round(look.sizes["shoulder"] * height * 1.08 / BODY_HALF_WIDTH)
    garment = draw_garment(max(32, round(garment_width * height / width)), max(32, garment_width), rng, fabric)
    pose_ref, pose_tgt = random_pose(rng), random_pose(rng)
    parts_ref, joints_ref = build_parts(look, pose_ref, height, width)
    parts_tgt, joints_tgt = build_parts(look, pose_tgt, height, width)
    reference = render(look, parts_ref, joints_ref, height, width, torso_garment=garment)
    target = render(look, parts_tgt, joints_tgt, height, width, torso_garment=garment)

    flow = np.full((height, width, 2), np.nan, dtype=np.float32)
    region = np.zeros((height, width), dtype=bool)
    for name, index_ in PART_INDEX.items():
        where = target.part_map == index_
        if not where.any():
            continue
        px, py = parts_ref[name].to_image(target.s[where], target.r[where])
        # Visible = all four pixels a bilinear warp reads there show this part (occlusions and outlines drop out).
        x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
        visible = (x0 >= 0) & (x0 + 1 < width) & (y0 >= 0) & (y0 + 1 < height)
        for dy in (0, 1):
            for dx in (0, 1):
                rows_, cols_ = np.clip(y0 + dy, 0, height - 1), np.clip(x0 + dx, 0, width - 1)
                visible &= reference.part_map[rows_, cols_] == index_
        rows, cols = np.nonzero(where)
        rows, cols = rows[visible], cols[visible]
        flow[rows, cols] = pixels_to_grid(px[visible], py[visible], height, width)
        region[rows, cols] = True
    return Sample(
        name=f"{index:06d}",
        target=target.image,
        reference=reference.image,
        flow=flow,
        mask=np.ones((height, width), dtype=bool),
        region=region,
        densepose_iuv=_iuv(target),
        reference_iuv=_iuv(reference),
    )


# -- writing ------------------------------------------------------------------------------------------------------


def _uint8(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(image * 255), 0, 255).astype(np.uint8))


def _write_jpeg(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as temp:
        image.save(temp, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def _write_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as temp:
        image.save(temp, format="PNG")


def _write_bytes(data: bytes, path: Path) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def _write_npy(array: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    _write_bytes(buffer.getvalue(), path)


_LIP_PALETTE = [
    0,
    0,
    0,
    128,
    0,
    0,
    254,
    0,
    0,
    0,
    85,
    0,
    169,
    0,
    51,
    254,
    85,
    0,
    0,
    0,
    85,
    0,
    119,
    220,
    85,
    85,
    0,
    0,
    85,
    85,
    85,
    51,
    0,
    52,
    86,
    128,
    0,
    128,
    0,
    0,
    0,
    254,
    51,
    169,
    220,
    0,
    254,
    254,
    85,
    254,
    169,
    169,
    254,
    85,
    254,
    254,
    0,
    254,
    169,
    0,
]


def _write_parse(labels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(labels).convert("P")  # palette indices = labels
    image.putpalette(_LIP_PALETTE + [0] * (768 - len(_LIP_PALETTE)))
    _write_png(image, path)


def write_vton(sample: Sample, split_dir: Path) -> None:
    name = sample.name
    assert sample.parse is not None and sample.keypoints is not None  # vton_sample always draws them
    _write_jpeg(_uint8(sample.target), split_dir / "image" / f"{name}.jpg")
    _write_jpeg(_uint8(sample.reference), split_dir / "cloth" / f"{name}.jpg")
    _write_png(Image.fromarray((sample.region * 255).astype(np.uint8)), split_dir / "cloth-mask" / f"{name}.png")
    _write_png(Image.fromarray((sample.mask * 255).astype(np.uint8)), split_dir / "agnostic-mask" / f"{name}_mask.png")
    _write_jpeg(_uint8(densepose_colours(sample.densepose_iuv)), split_dir / "image-densepose" / f"{name}.jpg")
    _write_png(Image.fromarray(sample.densepose_iuv), split_dir / "densepose-iuv" / f"{name}.png")
    _write_parse(sample.parse, split_dir / "image-parse-v3" / f"{name}.png")
    keypoints = {
        "version": 1.3,
        "people": [
            {
                "person_id": [-1],
                "pose_keypoints_2d": sample.keypoints,
                "face_keypoints_2d": [],
                "hand_left_keypoints_2d": [],
                "hand_right_keypoints_2d": [],
            }
        ],
    }
    _write_bytes(json.dumps(keypoints).encode(), split_dir / "openpose_json" / f"{name}_keypoints.json")
    height, width = sample.target.shape[:2]
    skeleton = draw_skeleton(coco_18(np.reshape(sample.keypoints, (25, 3))), (width, height))
    _write_png(skeleton, split_dir / "openpose_img" / f"{name}_rendered.png")
    _write_npy(sample.flow, split_dir / "gt-flow" / f"{name}.npy")


def pose_names(sample: Sample) -> tuple[str, str]:
    """(reference, target) image stems of a pose pair."""
    return f"{sample.name}_1", f"{sample.name}_2"


def write_pose(sample: Sample, split_dir: Path) -> None:
    source, target = pose_names(sample)
    assert sample.reference_iuv is not None  # pose_sample always draws it
    _write_jpeg(_uint8(sample.reference), split_dir / "image" / f"{source}.jpg")
    _write_jpeg(_uint8(sample.target), split_dir / "image" / f"{target}.jpg")
    _write_png(Image.fromarray(sample.reference_iuv), split_dir / "densepose" / f"{source}.png")
    _write_png(Image.fromarray(sample.densepose_iuv), split_dir / "densepose" / f"{target}.png")
    _write_npy(sample.flow, split_dir / "gt-flow" / f"{target}__{source}.npy")


def make_sample(
    task: str,
    seed: int,
    split: str,
    index: int,
    height: int,
    width: int,
    fabric: Fabric = Fabric(),
) -> Sample:
    if task not in TASKS:
        raise LeffaError(f"task {task!r}: choose one of {', '.join(TASKS)}", option="task")
    if split not in SPLITS:
        raise LeffaError(f"split {split!r}: choose one of {', '.join(SPLITS)}", option="split")
    return (vton_sample if task == "vton" else pose_sample)(seed, split, index, height, width, fabric)


def write_unpaired(sample: Sample, split_dir: Path) -> None:
    """The unpaired ground truth: ``image-unpaired/PERSON__CLOTH.png`` (lossless) and the new garment's region
    ``cloth-mask-unpaired/PERSON__CLOTH.png`` (L, 255 = garment pixels; the region its colour is scored on)."""
    _write_png(_uint8(sample.target), split_dir / "image-unpaired" / f"{sample.name}.png")
    _write_png(
        Image.fromarray((sample.region * 255).astype(np.uint8)),
        split_dir / "cloth-mask-unpaired" / f"{sample.name}.png",
    )


def generate_dataset(
    task: str,
    out: str | Path,
    n: int,
    size: tuple[int, int],
    seed: int = 0,
    split: str = "train",
    progress=None,
    unpaired: bool = False,
    fabric: Fabric = Fabric(),
) -> list[str]:
    """Draw ``n`` samples into ``out/<split>/`` and write the pairs list; returns the target names written.

    ``unpaired`` (try-on only, n >= 2) also renders every person wearing the next sample's garment and writes
    ``<split>_pairs_unpaired.txt`` (``person.jpg cloth.jpg``) with that ground truth (``write_unpaired``).
    ``fabric`` sets the patterns' period and colour ramp (``Fabric``).
    ``progress``, when given, is called once per finished sample (for a CLI progress bar).
    """
    if n < 1:
        raise LeffaError(f"n {n}: need at least one sample", option="n")
    if unpaired and task != "vton":
        raise LeffaError(
            f"unpaired: only for task vton (pose pairs differ already), not {task!r}", option=("unpaired", "task")
        )
    if unpaired and n < 2:
        raise LeffaError(
            f"unpaired: needs n of at least 2 (each person wears another sample's garment), got {n}",
            option=("unpaired", "n"),
        )
    height, width = size
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LeffaError(f"{out}: exists and is not a folder")
    split_dir = out / split
    names: list[str] = []
    rows: list[tuple[str, str]] = []  # (reference, target) file names
    unpaired_rows: list[str] = []
    for index in range(n):
        sample = make_sample(task, seed, split, index, height, width, fabric)
        if task == "vton":
            write_vton(sample, split_dir)
            rows.append((f"{sample.name}.jpg", f"{sample.name}.jpg"))
            names.append(sample.name)
            if unpaired:
                partner = unpaired_partner(index, n)
                write_unpaired(unpaired_sample(seed, split, index, partner, height, width, fabric), split_dir)
                unpaired_rows.append(f"{sample.name}.jpg {partner:06d}.jpg")
        else:
            write_pose(sample, split_dir)
            source, target = pose_names(sample)
            rows.append((f"{source}.jpg", f"{target}.jpg"))
            names.append(target)
        if progress is not None:
            progress()
    if task == "vton":
        _write_bytes(("\n".join(" ".join(row) for row in rows) + "\n").encode(), out / f"{split}_pairs.txt")
        if unpaired:
            _write_bytes(("\n".join(unpaired_rows) + "\n").encode(), out / f"{split}_pairs_unpaired.txt")
    else:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["from", "to"])
        writer.writerows(rows)
        _write_bytes(text.getvalue().encode(), out / f"{split}_pairs.csv")
    return names
