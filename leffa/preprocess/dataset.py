"""Fill the missing condition folders of a VITON-HD-layout dataset in place, resumably.

Layout: ``DIR/{train,test}/image/NAME.jpg``. For each photo this writes, when absent (existing files are never
touched, so an interrupted run resumes where it stopped):

- ``agnostic-mask/NAME_mask.png``: the garment-agnostic mask (255 = repaint) at the photo's size;
- ``image-parse-v3/NAME.png``: the LIP parsing (VITON-HD's ``image-parse-v3`` uses LIP's 20 labels), palette PNG;
- ``openpose_json/NAME_keypoints.json``: OpenPose keypoints in the photo's pixels;
- ``openpose_img/NAME_rendered.png``: the drawn skeleton.

Existing keypoints are read back rather than recomputed when only the mask is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from leffa import images
from leffa.atomic import atomic_path, save_image
from leffa.errors import LeffaError
from leffa.preprocess.conditions import PrepTools, working_copy
from leffa.preprocess.masks import agnostic_mask, mask_image
from leffa.preprocess.openpose import draw_skeleton, keypoints_json, read_keypoints
from leffa.preprocess.parsing import combine_parsings, label_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ItemPaths:
    image: Path
    mask: Path
    parse: Path
    keypoints: Path
    skeleton: Path

    @classmethod
    def for_image(cls, image: Path) -> ItemPaths:
        split, name = image.parent.parent, image.stem
        return cls(
            image=image,
            mask=split / "agnostic-mask" / f"{name}_mask.png",
            parse=split / "image-parse-v3" / f"{name}.png",
            keypoints=split / "openpose_json" / f"{name}_keypoints.json",
            skeleton=split / "openpose_img" / f"{name}_rendered.png",
        )

    def missing(self) -> list[str]:
        return [kind for kind in ("mask", "parse", "keypoints", "skeleton") if not getattr(self, kind).exists()]

    def models_needed(self) -> set[str]:
        """``parsing`` for a missing mask or parse, ``pose`` for keypoints that are not on disk yet."""
        missing = set(self.missing())
        needed = {"parsing"} if missing & {"mask", "parse"} else set()
        if missing & {"mask", "keypoints", "skeleton"} and not self.keypoints.exists():
            needed.add("pose")
        return needed


@dataclass
class DatasetPlan:
    items: list[ItemPaths]
    complete: int  # photos with every output present already
    splits: list[str] = field(default_factory=list)

    def missing_counts(self) -> dict[str, int]:
        counts = {kind: 0 for kind in ("mask", "parse", "keypoints", "skeleton")}
        for item in self.items:
            for kind in item.missing():
                counts[kind] += 1
        return counts


def plan_dataset(root: str | Path, splits: tuple[str, ...] = SPLITS) -> DatasetPlan:
    """The photos that still miss at least one output, and how many are complete."""
    root = Path(root)
    if not root.is_dir():
        raise LeffaError(f"{root}: dataset folder not found")
    found = [s for s in splits if (root / s / "image").is_dir()]
    if not found:
        raise LeffaError(
            f"{root}: no {'/ or '.join(splits)}/image folder (expected the VITON-HD layout DIR/train/image/*.jpg)"
        )
    images = sorted(p for s in found for p in (root / s / "image").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    items = [ItemPaths.for_image(p) for p in images]
    todo = [item for item in items if item.missing()]
    return DatasetPlan(todo, len(items) - len(todo), found)


def models_needed(items: list[ItemPaths]) -> set[str]:
    """What filling ``items`` runs: ``parsing`` (ATR + LIP), ``pose`` (OpenPose); drawing a skeleton needs neither."""
    return set().union(*(item.models_needed() for item in items))


def fill_item(
    item: ItemPaths,
    tools: PrepTools,
    garment_type: str = "upper_body",
    style: str = "hd",
    work_height: int = 512,
    mask_style: str = "upstream",
) -> list[str]:
    """Write the missing outputs of one photo; returns what it wrote."""
    missing = item.missing()
    if not missing:
        return []
    photo = images.read_rgb(item.image, "photo")
    work = working_copy(photo, work_height)
    to_work = work.height / photo.height
    lip_labels = tools.lip(work) if tools.lip is not None and ("parse" in missing or "mask" in missing) else None
    if {"keypoints", "skeleton", "mask"} & set(missing):
        if item.keypoints.exists():
            keypoints = read_keypoints(item.keypoints)
            keypoints[:, :2] *= to_work
        else:
            keypoints = tools.pose_model()(work, source=str(item.image))
    written = []
    if "mask" in missing:
        labels = combine_parsings(tools.atr_parser()(work), lip_labels)
        mask = agnostic_mask(labels, keypoints, garment_type, style, mask_style)
        save_image(images.resize_labels(mask_image(mask), (photo.height, photo.width)), item.mask)
        written.append("mask")
    if "parse" in missing:
        if lip_labels is None:
            raise LeffaError("image-parse-v3 needs the LIP parser (do not disable it for `prep dataset`)")
        save_image(images.resize_labels(label_image(lip_labels), (photo.height, photo.width)), item.parse)
        written.append("parse")
    if {"keypoints", "skeleton"} & set(missing):
        photo_keypoints = keypoints.copy()
        photo_keypoints[:, :2] /= to_work
        if "keypoints" in missing:
            with atomic_path(item.keypoints) as temp:
                temp.write_text(json.dumps(keypoints_json(photo_keypoints)))
            written.append("keypoints")
        if "skeleton" in missing:
            save_image(draw_skeleton(photo_keypoints, (photo.height, photo.width)), item.skeleton)
            written.append("skeleton")
    return written


def written_counts(results: list[list[str]]) -> dict[str, int]:
    counts = {kind: 0 for kind in ("mask", "parse", "keypoints", "skeleton")}
    for written in results:
        for kind in written:
            counts[kind] += 1
    return counts
