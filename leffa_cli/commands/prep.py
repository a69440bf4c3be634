"""``leffa prep mask|parse|pose|garment|dataset``: conditions from plain photos (parsing, keypoints, masks)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from leffa_cli.groups import group

console = Console(highlight=False)

PERSON = typer.Argument(..., help="Person photo (any size; RGB).")
OFFLINE = typer.Option(False, "--offline", help="Use the hub cache only; never download.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda.")
PARSING_MODEL = typer.Option(
    None, "--parsing-model", help="Local ATR parsing ONNX (default: hub humanparsing/parsing_atr.onnx)."
)
LIP_MODEL = typer.Option(
    None, "--lip-model", help="Local LIP parsing ONNX (default: hub humanparsing/parsing_lip.onnx)."
)
POSE_MODEL = typer.Option(
    None, "--pose-model", help="Local OpenPose body .pth (default: hub openpose/body_pose_model.pth)."
)
SCALES = typer.Option(
    "1.0", "--scales", help="OpenPose scales, comma-separated (1.0 = 368 px high; upstream uses 0.5)."
)
TYPE = typer.Option("upper_body", "--type", help="upper_body, lower_body or dresses.")
STYLE = typer.Option("hd", "--style", help="hd (VITON-HD model) or dc (DressCode model).")
MASK_STYLE = typer.Option(
    "upstream", "--mask-style", help="upstream (the authors' mask rules, with documented fixes) or tight (ours)."
)
WORK_HEIGHT = typer.Option(512, "--work-height", help="Height the models and mask rules work at.")


# The option of these commands that gives each hub file as a local file instead.
LOCAL_FILE_OPTIONS = {
    "parsing_atr.onnx": "--parsing-model FILE",
    "parsing_lip.onnx": "--lip-model FILE",
    "body_pose_model.pth": "--pose-model FILE",
}


@contextmanager
def _ways_around(options: dict[str, str] = LOCAL_FILE_OPTIONS, skip: str = ""):
    """Add this command's options to a missing-weights error: the local-file option, and what skips the model."""
    from leffa.hub import MissingWeights

    try:
        yield
    except MissingWeights as error:
        option = options.get(error.filename.rsplit("/", 1)[-1])
        if option:
            error = error.or_else(f"pass {option}")
        raise (error.or_else(skip) if skip else error) from None


def _scales(text: str) -> tuple[float, ...]:
    from leffa.errors import LeffaError

    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise LeffaError(f"--scales {text}: expected comma-separated numbers, e.g. 0.5,1.0") from None
    if not scales or min(scales) <= 0:
        raise LeffaError(f"--scales {text}: expected positive numbers")
    return scales


def _open(path: Path, keep_alpha: bool = False):
    """An input image through ``leffa.images`` (RGB; with ``keep_alpha`` a transparent image keeps its alpha)."""
    from leffa import images

    image = images.open_image(path, "image")
    return image if keep_alpha and images.has_alpha(image) else images.to_rgb(image)


def mask(
    person: Path = PERSON,
    output: Path = typer.Option(..., "-o", "--output", help="Mask PNG to write (255 = repaint)."),
    garment_type: str = TYPE,
    style: str = STYLE,
    mask_style: str = MASK_STYLE,
    parse: Path = typer.Option(
        None, "--parse", help="Use this person-label parsing PNG instead of running the parsers."
    ),
    keypoints: Path = typer.Option(None, "--keypoints", help="Use this OpenPose JSON instead of running OpenPose."),
    overlay: Path = typer.Option(None, "--overlay", help="Also write the photo with the masked region greyed out."),
    neck: bool = typer.Option(True, "--neck/--no-neck", help="Run the LIP parser too, to find the neck."),
    parsing_model: Path = PARSING_MODEL,
    lip_model: Path = LIP_MODEL,
    pose_model: Path = POSE_MODEL,
    scales: str = SCALES,
    work_height: int = WORK_HEIGHT,
    device: str = DEVICE,
    offline: bool = OFFLINE,
) -> None:
    """Garment-agnostic mask of a person photo for --type in --style (parsing + keypoints -> rules)."""
    from leffa.atomic import save_image
    from leffa.images import mask_array
    from leffa.preprocess.conditions import person_conditions
    from leffa.preprocess.masks import overlay as grey_overlay
    from leffa.preprocess.openpose import read_keypoints
    from leffa.preprocess.parsing import read_label_image

    photo = _open(person)
    ungiven = [option for option, given in (("--parse FILE", parse), ("--keypoints FILE", keypoints)) if given is None]
    with _ways_around(skip=f"give {' and '.join(ungiven)} to skip the models" if ungiven else ""):
        result = person_conditions(
            photo, garment_type, style,
            labels=read_label_image(parse) if parse is not None else None,
            keypoints=read_keypoints(keypoints) if keypoints is not None else None,
            work_height=work_height, source=str(person), mask_style=mask_style, parsing_model=parsing_model, lip_model=lip_model,
            pose_model=pose_model, neck=neck, offline=offline, device=device, scales=_scales(scales),
        )  # fmt: skip
    picture = result.mask_image()
    save_image(picture, output)
    if overlay is not None:
        save_image(grey_overlay(photo, mask_array(picture)), overlay)
    console.print(
        f"wrote {output} ({garment_type}, {style}, {mask_style}; {result.mask.mean():.1%} of the photo masked)"
    )


def parse(
    person: Path = PERSON,
    output: Path = typer.Option(..., "-o", "--output", help="Palette PNG of labels to write."),
    model: str = typer.Option("atr", "--model", help="atr (18 labels) or lip (20 labels)."),
    parsing_model: Path = typer.Option(
        None, "--parsing-model", help="Local ONNX file for --model (default: from the hub)."
    ),
    device: str = DEVICE,
    offline: bool = OFFLINE,
) -> None:
    """Human parsing of a person photo with upstream's SCHP ONNX models; writes a palette PNG of labels."""
    from leffa.atomic import save_image
    from leffa.errors import LeffaError
    from leffa.preprocess.conditions import load_parser
    from leffa.preprocess.parsing import MODELS, label_image

    if model not in MODELS:
        raise LeffaError(f"--model {model}: unknown parsing model (choose from {', '.join(MODELS)})")
    with _ways_around({MODELS[model]["hub_file"].rsplit("/", 1)[-1]: "--parsing-model FILE"}):
        parser = load_parser(model, parsing_model, offline, device)
    labels = parser(_open(person))
    save_image(label_image(labels), output)
    present = ", ".join(parser.labels[i] for i in np.unique(labels) if i != 0) or "background only"
    console.print(f"wrote {output} ({model.upper()} labels: {present})")


def pose(
    person: Path = PERSON,
    output: Path = typer.Option(..., "-o", "--output", help="OpenPose keypoints JSON to write."),
    draw: Path = typer.Option(None, "--draw", help="Also write the drawn skeleton (PNG)."),
    pose_model: Path = POSE_MODEL,
    scales: str = SCALES,
    device: str = DEVICE,
    offline: bool = OFFLINE,
) -> None:
    """Body keypoints (COCO 18) of the main person, in OpenPose's JSON format."""
    from leffa.atomic import atomic_path, save_image
    from leffa.preprocess.conditions import load_pose
    from leffa.preprocess.openpose import draw_skeleton, keypoints_json

    photo = _open(person)
    with _ways_around():
        estimator = load_pose(pose_model, offline, device, _scales(scales))
    keypoints = estimator(photo, source=str(person))
    with atomic_path(output) as temp:
        temp.write_text(json.dumps(keypoints_json(keypoints)))
    if draw is not None:
        save_image(draw_skeleton(keypoints, (photo.height, photo.width)), draw)
    console.print(f"wrote {output} ({int((keypoints[:, 2] > 0).sum())} of 18 keypoints found)")


def garment(
    image: Path = typer.Argument(..., help="Garment photo (PNG with alpha, or on a plain backdrop)."),
    output: Path = typer.Option(..., "-o", "--output", help="Cleaned garment image to write."),
    width: int = typer.Option(768, "--width"),
    height: int = typer.Option(1024, "--height"),
    margin: float = typer.Option(0.05, "--margin", help="Empty border, as a share of each side."),
) -> None:
    """Crop a garment photo to the garment and centre it on a white canvas (3:4 by default)."""
    from leffa.atomic import save_image
    from leffa.errors import LeffaError
    from leffa.preprocess.garment import clean_garment

    if width <= 0 or height <= 0 or not 0 <= margin < 0.5:
        raise LeffaError("--width/--height must be positive and --margin in [0, 0.5)")
    canvas, cut = clean_garment(_open(image, keep_alpha=True), (height, width), margin)
    save_image(canvas, output)
    how = {
        "alpha": "from the alpha channel",
        "backdrop": "from the backdrop colour",
        "none": "no uniform backdrop: whole picture kept",
    }[cut.method]
    console.print(f"wrote {output} (garment box {cut.box}, {how})")


def dataset(
    root: Path = typer.Argument(..., help="VITON-HD-layout dataset folder (DIR/{train,test}/image/*.jpg)."),
    garment_type: str = TYPE,
    style: str = STYLE,
    mask_style: str = MASK_STYLE,
    splits: str = typer.Option("train,test", "--splits"),
    limit: int = typer.Option(0, "--limit", help="Process at most this many photos (0 = all)."),
    parsing_model: Path = PARSING_MODEL,
    lip_model: Path = LIP_MODEL,
    pose_model: Path = POSE_MODEL,
    scales: str = SCALES,
    work_height: int = WORK_HEIGHT,
    device: str = DEVICE,
    offline: bool = OFFLINE,
) -> None:
    """Fill missing agnostic-mask/, image-parse-v3/, openpose_json/ and openpose_img/ files (resumable)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from leffa.errors import LeffaError
    from leffa.preprocess.conditions import PrepTools, load_parser, load_pose
    from leffa.preprocess.dataset import fill_item, models_needed, plan_dataset, written_counts

    plan = plan_dataset(root, tuple(s.strip() for s in splits.split(",") if s.strip()))
    items = plan.items[:limit] if limit > 0 else plan.items
    missing = ", ".join(f"{n} {kind}" for kind, n in plan.missing_counts().items() if n)
    console.print(
        f"{root}: {plan.complete} photos complete, {len(plan.items)} to fill ({', '.join(plan.splits)})"
        + (f"; missing: {missing}" if missing else "")
    )
    if not items:
        return
    needed = models_needed(items)
    parsing = "parsing" in needed
    with _ways_around():
        tools = PrepTools(
            atr=load_parser("atr", parsing_model, offline, device) if parsing else None,
            pose=load_pose(pose_model, offline, device, _scales(scales), lazy=True) if "pose" in needed else None,
            lip=load_parser("lip", lip_model, offline, device) if parsing else None,
        )
    results, failures = [], []
    columns = (
        TextColumn("[bold]prep dataset"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[name]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("fill", total=len(items), name="")
        for item in items:
            progress.update(task, name=item.image.name)
            try:
                results.append(fill_item(item, tools, garment_type, style, work_height, mask_style))
            except LeffaError as error:
                failures.append(str(error))
            progress.advance(task)
    counts = written_counts(results)
    console.print("wrote " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    for failure in failures:
        console.print(f"[yellow]skipped[/yellow] {failure}", markup=True)
    if failures and not results:
        raise LeffaError(f"{root}: every photo failed; first: {failures[0]}")


def register(app: typer.Typer) -> None:
    prep = group(app, "prep")
    prep.command("mask")(mask)
    prep.command("parse")(parse)
    prep.command("pose")(pose)
    prep.command("garment")(garment)
    prep.command("dataset")(dataset)
