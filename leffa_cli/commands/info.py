"""``leffa info``: versions, devices, dtype support and where weights are cached."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def info() -> None:
    """Print versions, available devices, dtype support and the weight cache location."""
    from leffa.environment import describe

    table = Table(title="leffa", show_header=False)
    for key, value in describe().items():
        table.add_row(key, str(value))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("info")(info)
