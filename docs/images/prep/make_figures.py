"""Make the pictures of docs/preprocessing.md with the project's own commands (and, for the fixes to the authors'
mask rules, the library, since the rules as published are not a command-line option).

The real parsing and OpenPose weights cannot be downloaded where these were made, so the person is drawn:
``leffa.preprocess.example_person`` paints a person label map and matching keypoints, and ``leffa prep mask`` is
run on them through ``--parse`` / ``--keypoints`` (the same rules the models' output goes through).

    python docs/images/prep/make_figures.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from leffa.preprocess.example_person import example_person, render
from leffa.preprocess.masks import overlay
from leffa.preprocess.openpose import KEYPOINT_NAMES, draw_skeleton, keypoints_json
from leffa.preprocess.parsing import PERSON_LABELS, label_image
from leffa.preprocess.upstream_masks import upstream_mask

HERE = Path(__file__).parent
LEFFA = [sys.executable, "-m", "leffa_cli.app"]
TYPES, STYLES = ("upper_body", "lower_body", "dresses"), ("hd", "dc")
TILE = (192, 256)


def run(*args) -> None:
    subprocess.run([*LEFFA, *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def caption(image: Image.Image, text: str) -> Image.Image:
    tile = ImageOps.pad(image.convert("RGB"), TILE, Image.Resampling.LANCZOS, color="white")
    canvas = Image.new("RGB", (TILE[0], TILE[1] + 16), "white")
    canvas.paste(tile, (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), text, fill="black")
    return canvas


def sheet(rows: list[list[Image.Image]]) -> Image.Image:
    width, height = rows[0][0].size
    out = Image.new("RGB", (width * max(map(len, rows)), height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            out.paste(tile, (c * width, r * height))
    return out


def masks_sheet(work: Path, mask_style: str, name: str) -> None:
    rows = []
    for outfit in ("shirt_and_pants", "dress"):
        labels, keypoints, photo = example_person(512, outfit)
        photo.save(work / f"{outfit}.png")
        label_image(labels).save(work / f"{outfit}_parse.png")
        (work / f"{outfit}_keypoints.json").write_text(json.dumps(keypoints_json(keypoints)))
        row = [caption(photo, "photo"), caption(label_image(labels), "parsing"),
               caption(draw_skeleton(keypoints, photo.size, photo), "keypoints")]  # fmt: skip
        for garment_type in TYPES:
            for style in STYLES:
                out = work / f"{outfit}_{garment_type}_{style}"
                run("prep", "mask", work / f"{outfit}.png", "--parse", work / f"{outfit}_parse.png",
                    "--keypoints", work / f"{outfit}_keypoints.json", "--type", garment_type, "--style", style,
                    "--mask-style", mask_style, "-o", f"{out}_mask.png", "--overlay", f"{out}_overlay.png")  # fmt: skip
                row.append(caption(Image.open(f"{out}_overlay.png"), f"{garment_type} {style}"))
        rows.append(row)
    sheet(rows).save(HERE / name, optimize=True)


def fix_cases():
    """(title, labels, keypoints, garment type, model) of each case where the authors' rules go wrong."""
    label = PERSON_LABELS.index
    joint = KEYPOINT_NAMES.index
    cases = []
    labels, keypoints, _ = example_person(512)
    bag = labels.copy()
    ImageDraw.Draw(canvas := Image.fromarray(bag)).rounded_rectangle([150, 170, 235, 235], 8, fill=label("bag"))
    cases.append(("1 bag held in front (hd top)", np.asarray(canvas), keypoints, "upper_body", "hd"))
    dress, dress_keypoints, _ = example_person(512, "dress")
    skirt = dress.copy()
    hip = int(dress_keypoints[joint("right-hip"), 1])
    skirt[:hip][skirt[:hip] == label("dress")] = label("upper-clothes")
    skirt[hip:][skirt[hip:] == label("dress")] = label("skirt")
    cases.append(("2 skirt (dc bottoms)", skirt, dress_keypoints, "lower_body", "dc"))
    no_elbow = keypoints.copy()
    no_elbow[joint("right-elbow")] = 0
    cases.append(("3 elbow not found (hd top)", labels, no_elbow, "upper_body", "hd"))
    raised = labels.copy()
    raised[np.isin(raised, [label("right-arm")])] = label("background")
    raised_keypoints = keypoints.copy()
    raised_keypoints[joint("right-elbow"), :2] = (100, 60)
    raised_keypoints[joint("right-wrist"), :2] = (60, 6)
    draw = ImageDraw.Draw(canvas := Image.fromarray(raised))
    shoulder, elbow, wrist = (tuple(raised_keypoints[joint(f"right-{p}"), :2]) for p in ("shoulder", "elbow", "wrist"))
    draw.line([shoulder, elbow, wrist], fill=label("right-arm"), width=24, joint="curve")
    cases.append(("4 arm raised to the edge (hd top)", np.asarray(canvas), raised_keypoints, "upper_body", "hd"))
    return cases


def fixes_sheet() -> None:
    rows = []
    for title, labels, keypoints, garment_type, model in fix_cases():
        photo = render(labels)
        published = upstream_mask(labels, keypoints, garment_type, model, fixes=False)
        fixed = upstream_mask(labels, keypoints, garment_type, model)
        rows.append([caption(draw_skeleton(keypoints, photo.size, photo), title),
                     caption(overlay(photo, published), "authors' rules"),
                     caption(overlay(photo, fixed), "leffa (upstream, fixed)")])  # fmt: skip
    sheet(rows).save(HERE / "mask-fixes.png", optimize=True)


def garment_sheet(work: Path) -> None:
    rng = np.random.default_rng(0)
    backdrop = np.full((600, 900, 3), (214, 212, 208), np.float32) + rng.normal(0, 2.5, (600, 900, 3))
    shirt = Image.new("L", (900, 600))
    draw = ImageDraw.Draw(shirt)
    draw.polygon([(520, 120), (600, 100), (680, 120), (780, 190), (745, 250), (700, 220), (700, 470),
                  (500, 470), (500, 220), (455, 250), (420, 190)], fill=255)  # fmt: skip
    draw.ellipse([565, 92, 635, 130], fill=0)
    inside = np.asarray(shirt, dtype=bool)
    photo = backdrop.copy()
    photo[inside] = (190, 60, 50) + rng.normal(0, 3, (inside.sum(), 3))
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(work / "shirt_photo.jpg", quality=95)
    rgba = np.zeros((500, 500, 4), np.uint8)
    yy, xx = np.mgrid[0:500, 0:500]
    trousers = ((abs(xx - 200) < 40) | (abs(xx - 300) < 40)) & (yy > 120) & (yy < 480) | (abs(xx - 250) < 90) & (
        yy > 100
    ) & (yy < 200)
    rgba[trousers] = (40, 50, 90, 255)
    Image.fromarray(rgba).save(work / "trousers.png")
    tiles = []
    for name in ("shirt_photo.jpg", "trousers.png"):
        run("prep", "garment", work / name, "-o", work / f"clean_{name}.jpg")
        source = Image.open(work / name)
        if source.mode == "RGBA":
            checker = Image.new("RGB", source.size, (200, 200, 200))
            checker.paste(source, mask=source)
            source = checker
        tiles += [
            caption(source, f"input {name}"),
            caption(Image.open(work / f"clean_{name}.jpg"), "leffa prep garment"),
        ]
    sheet([tiles]).save(HERE / "garment.png", optimize=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        masks_sheet(Path(folder), "upstream", "masks.png")
        masks_sheet(Path(folder), "tight", "masks-tight.png")
        fixes_sheet()
        garment_sheet(Path(folder))
