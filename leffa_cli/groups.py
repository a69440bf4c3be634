"""Shared subcommand groups, so that several plugins can add commands under one name (e.g. ``leffa prep``)."""

from __future__ import annotations

import typer

_HELP = {
    "prep": "Prepare data: synthetic datasets, masks, parsing, keypoints, DensePose, garment clean-up.",
}


def group(app: typer.Typer, name: str) -> typer.Typer:
    """The sub-app ``name`` of ``app``, created and attached on first use."""
    for info in app.registered_groups:
        if info.name == name:
            return info.typer_instance
    sub = typer.Typer(name=name, help=_HELP.get(name), no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub
