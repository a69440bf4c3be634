"""The CLI shell: version, info, plugin discovery, one-line errors."""

import subprocess
import sys

import typer

from leffa import __version__
from leffa_cli.app import ENTRY_POINT_GROUP, build_app, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "leffa_cli.app", *args], capture_output=True, text=True)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"leffa {__version__}"


def test_info_lists_device_and_cache():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert "device" in result.stdout and "cpu" in result.stdout
    assert "weights cache" in result.stdout


def test_unknown_command_fails():
    result = run_cli("no-such-command")
    assert result.returncode != 0


def test_third_party_plugin_is_registered(monkeypatch):
    """A package publishing a ``register`` under the entry-point group adds a subcommand."""
    import leffa_cli.app as app_module

    class FakeEntryPoint:
        name = "hello"

        def load(self):
            def register(app: typer.Typer):
                @app.command("hello")
                def hello():
                    typer.echo("hello from a plugin")

            return register

    real = app_module.entry_points
    monkeypatch.setattr(app_module, "entry_points", lambda group: [*real(group=group), FakeEntryPoint()])
    from typer.testing import CliRunner

    result = CliRunner().invoke(build_app(), ["hello"])
    assert result.exit_code == 0
    assert "hello from a plugin" in result.output
    assert ENTRY_POINT_GROUP == "leffa.commands"


def test_user_error_is_one_line(monkeypatch, capsys):
    import leffa_cli.app as app_module
    from leffa.errors import LeffaError

    class FailingEntryPoint:
        name = "boom"

        def load(self):
            def register(app):
                @app.command("boom")
                def boom():
                    raise LeffaError("person.jpg: not an image")

            return register

    monkeypatch.setattr(app_module, "entry_points", lambda group: [FailingEntryPoint()])
    try:
        main(["boom"])
    except SystemExit as exit_:
        assert exit_.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "leffa: error: person.jpg: not an image"
