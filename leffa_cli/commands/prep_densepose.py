"""``leffa prep densepose``: the DensePose condition image of a person photo, without detectron2."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from leffa_cli.groups import group


class SegStyle(str, Enum):
    leffa = "leffa"
    detectron2 = "detectron2"


class Kind(str, Enum):
    iuv = "iuv"
    index = "index"
    seg = "seg"


def densepose(
    person: Path = typer.Argument(..., help="Person image (any format Pillow reads)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the DensePose image (PNG keeps it exact)."),
    kind: Kind = typer.Option(
        Kind.seg, "--kind", help="seg: try-on (VITON-HD model); index: DressCode model; iuv: pose transfer."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="detectron2 model_final_162be9.pkl (default: fetched from the Leffa hub repository)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="detectron2 yaml (densepose_rcnn_R_50_FPN_s1x.yaml + its _BASE_); default: built in."
    ),
    offline: bool = typer.Option(False, "--offline", help="Use only the local hub cache, never download."),
    device: str | None = typer.Option(
        None, "--device", help="torch device, e.g. cpu or cuda (default: cuda if present)."
    ),
    all_people: bool = typer.Option(
        False, "--all-people", help="seg: draw every detected person (default: the highest-scoring one)."
    ),
    seg_style: SegStyle = typer.Option(
        SegStyle.leffa,
        "--seg-style",
        help="seg: leffa = full-strength colours on black (Leffa's app); detectron2 = stock alpha-0.7 blend.",
    ),
    swap_channels: bool = typer.Option(
        True,
        "--swap-channels/--no-swap-channels",
        help="Feed RGB where the detector expects BGR, as Leffa's app does (default); --no-swap-channels: true BGR.",
    ),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Write a black image when no person is found."),
) -> None:
    """Write the DensePose image (iuv / index / seg) of the main person in PERSON."""
    from leffa.atomic import save_image
    from leffa.densepose import densepose_image
    from leffa.densepose.config import config_from_yaml
    from leffa.hub import MissingWeights
    from leffa.images import read_rgb

    image = read_rgb(person, "person image")
    try:
        result = densepose_image(
            image,
            kind.value,
            weights=weights,
            device=device,
            offline=offline,
            all_people=all_people,
            allow_empty=allow_empty,
            seg_style=seg_style.value,
            swap_channels=swap_channels,
            config=config_from_yaml(config) if config is not None else None,
        )
    except MissingWeights as error:
        raise error.or_else("pass --weights FILE") from None
    save_image(result, output)
    typer.echo(f"wrote {output} ({kind.value}, {result.width}x{result.height})")


def register(app: typer.Typer) -> None:
    group(app, "prep").command("densepose")(densepose)
