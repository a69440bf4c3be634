"""Missing weights without a hub: the answer is immediate (no retries), one line, names the file, where to put it
and what avoids it; and every option any leffa message names exists on some leffa command."""

from __future__ import annotations

import ast
import http.server
import re
import socket
from pathlib import Path

import pytest

from leffa.errors import LeffaError
from leffa.hub import MissingWeights, fetch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty weights folder and hub cache; any HTTP request through huggingface_hub fails the test."""
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setenv("LEFFA_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))

    def no_requests(*args, **kwargs):
        raise AssertionError("huggingface_hub made an HTTP request (a retry loop) although the answer was known")

    monkeypatch.setattr(hub_http, "http_backoff", no_requests)
    monkeypatch.setattr(hub_http, "get_session", no_requests)
    return tmp_path


def _closed_port() -> int:
    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    return port


def _run_cli(argv, capsys) -> tuple[int, str]:
    from leffa_cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_tryon_with_hf_hub_offline_blames_offline_mode_and_says_what_to_do(no_weights, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = no_weights / "x.png"
    code, err = _run_cli(["tryon", str(EXAMPLES / "person.jpg"), str(EXAMPLES / "garment.jpg"), "-o", str(out)], capsys)
    line = err.strip()
    assert code == 2 and "\n" not in line and not out.exists()
    assert "HF_HUB_OFFLINE=1 is set" in line and "unreachable" not in line
    assert "parsing_atr.onnx" in line  # which file
    assert str(no_weights / "weights" / "franciszzj" / "Leffa" / "humanparsing") in line  # where to put it
    assert "--mask FILE" in line and "leffa prep mask" in line  # what avoids it


def test_unreachable_hub_is_one_connection_attempt(no_weights, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("LEFFA_HUB_ENDPOINT", f"http://127.0.0.1:{port}")
    attempts = []
    real_connect = socket.create_connection

    def counting(address, *args, **kwargs):
        attempts.append(address)
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    with pytest.raises(MissingWeights) as error:
        fetch("openpose/body_pose_model.pth", what="OpenPose body model")
    message = str(error.value)
    assert attempts == [("127.0.0.1", port)]
    assert f"127.0.0.1:{port} is unreachable" in message and "--offline" not in message
    assert f"http://127.0.0.1:{port}/franciszzj/Leffa/resolve/main/openpose/body_pose_model.pth" in message


def test_offline_flag_never_connects_and_weights_folder_is_read_first(no_weights, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("connected although offline"))
    with pytest.raises(MissingWeights, match=r"parsing_lip.onnx \(LIP parser\) is not on this machine and --offline"):
        fetch("humanparsing/parsing_lip.onnx", offline=True, what="LIP parser")
    placed = no_weights / "weights" / "franciszzj" / "Leffa" / "humanparsing" / "parsing_lip.onnx"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"onnx")
    assert fetch("humanparsing/parsing_lip.onnx", offline=True) == placed


def test_prep_commands_name_their_own_local_file_options(no_weights, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    person = str(EXAMPLES / "person.jpg")
    code, err = _run_cli(["prep", "mask", person, "-o", str(no_weights / "m.png")], capsys)
    assert code == 2 and "--parsing-model FILE" in err and "--parse FILE and --keypoints FILE" in err
    code, err = _run_cli(["prep", "pose", person, "-o", str(no_weights / "k.json")], capsys)
    assert code == 2 and "body_pose_model.pth (OpenPose body model)" in err and "--pose-model FILE" in err


# -- every option a message names exists ----------------------------------------------------------------------------

OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?![\w-])")  # not a template's "--no-" prefix
# Options of other programs that a leffa message may legitimately mention ({"--index-url": "pip"}); none so far.
FOREIGN: dict[str, str] = {}


def _leffa_options() -> set[str]:
    """Every option (both spellings of flags) of every leffa command and subcommand."""
    import click
    import typer

    from leffa_cli.app import build_app

    found: set[str] = set()

    def walk(command: click.Command) -> None:
        for parameter in command.params:
            found.update(name for name in (*parameter.opts, *parameter.secondary_opts) if name.startswith("--"))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(build_app()))
    return found


def _message_options() -> dict[str, list[str]]:
    """``--option`` names inside string literals of leffa's code (messages, hints), with where they occur."""
    named: dict[str, list[str]] = {}
    for path in sorted([*ROOT.joinpath("leffa").rglob("*.py"), *ROOT.joinpath("leffa_cli").rglob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for option in OPTION.findall(node.value):
                    named.setdefault(option, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return named


def test_every_option_named_in_a_message_exists():
    existing = _leffa_options() | {"--help"}  # click adds --help to every command
    named = _message_options()
    assert len(named) > 20  # the scan finds the messages
    unknown = {option: places for option, places in named.items() if option not in existing and option not in FOREIGN}
    assert not unknown, f"messages name options no leffa command has: {unknown}"


def test_offline_message_is_a_leffa_error():
    assert issubclass(MissingWeights, LeffaError)
