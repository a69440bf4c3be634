"""Entry point: build the Typer app from the ``leffa.commands`` plugins and turn user mistakes into one line.

A plugin is any callable ``register(app: typer.Typer) -> None`` published under the entry-point group
``leffa.commands``; third-party packages add subcommands the same way the built-in ones do.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer
from rich.console import Console

from leffa import __version__
from leffa.errors import LeffaError
from leffa_cli.fields import flag

ENTRY_POINT_GROUP = "leffa.commands"
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leffa {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="leffa",
        help="Virtual try-on and pose transfer with Leffa: train, sample, evaluate, export, visualise attention flow.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    ) -> None:
        """Leffa: controllable person image generation."""

    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        entry.load()(app)
    return app


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit; used for user mistakes only."""
    error_console.print(f"leffa: error: {message}", markup=False)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(build_app())
    try:
        command.main(args=argv, prog_name="leffa", standalone_mode=True)
    except LeffaError as error:
        fail(error.worded(flag))  # the library names parameters; the CLI says which flag
    except KeyboardInterrupt:
        fail("interrupted", code=130)


if __name__ == "__main__":
    main()
