"""Every shell command written in README.md and docs/*.md runs as written, offline.

What is extracted: fenced code blocks tagged ``bash``, ``sh``, ``shell`` or ``console``; one command per logical
line (``\\`` continuations and ``<<'EOF'`` here-documents joined). Every fenced block must carry a language tag
(``text`` for synopses, layouts and formulas), so a command block cannot escape the check by being untagged.

What is skipped, and only when the docs say so, with a marker the reader sees too:

- ``# needs: weights`` (released model or metric weights, hub downloads), ``# needs: gpu``, ``# needs: dataset``
  (a real dataset such as VITON-HD), ``# needs: slow`` (minutes of CPU: benchmarks, recipes, the test suite),
  ``# needs: server`` (``leffa serve`` / ``leffa demo``, which run until stopped, and requests to them);
- as a trailing comment on the command's line, or on a comment line of its own at the top of a block (then it
  covers the whole block) or just above one command (then it covers that command). Several: ``# needs: gpu, dataset``.

How the rest run: one workspace per page (a temporary folder), commands in page order, each with
``bash -euo pipefail`` and the ``export`` and ``cd`` lines seen before it on the page; a leading ``pip install ... &&`` is
dropped (the package is installed already). The workspace holds what the pages name as inputs: ``examples/``,
``person.jpg``, ``garment.jpg``, ``mask.png``, ``densepose.jpg``/``.png``, ``target.jpg`` + ``target_iuv.png``
(pose), ``data/synth`` and ``data/viton_hd`` (tiny ``leffa prep synth`` folders), ``data/test/image`` with
predictions ``out/baseline`` and ``out/leffa``, and links to ``tests/fixtures`` and ``benchmarks``. The
environment is offline (``HF_HUB_OFFLINE=1``, empty weight caches), so a command that silently needs a download
fails here rather than on a user's machine. A page that needs another input: add it to ``_build_kit``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
NEEDS = {
    "weights": "needs released weights (not downloadable offline)",
    "gpu": "needs a GPU",
    "dataset": "needs a real dataset",
    "slow": "takes minutes of CPU",
    "server": "runs until stopped, or needs one running (tests/test_serve.py, tests/test_demo_browser.py run them)",
}
MARKER = re.compile(r"#[^\n]*?\bneeds:\s*([a-z][a-z, ]*)")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
PIP_PREFIX = re.compile(r"^\s*pip install [^&;]*&&\s*")
COMMAND_TIMEOUT = 240  # seconds for one command; the whole file is meant to stay within ~3 minutes on 2 cores


@dataclass
class DocCommand:
    page: str
    line: int
    text: str
    needs: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _needs(text: str, where: str) -> set[str]:
    found = set()
    for match in MARKER.finditer(text):
        for word in filter(None, (w.strip() for w in match.group(1).split(","))):
            if word not in NEEDS:
                raise AssertionError(f"{where}: unknown marker 'needs: {word}' (known: {', '.join(NEEDS)})")
            found.add(word)
    return found


def fenced_blocks(text: str):
    """``(language, first body line number, body)`` of every fenced block."""
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("body")) + 1
        yield match.group("info").strip().split(" ")[0].lower(), line, match.group("body")


def commands(page: Path, root: Path = ROOT) -> list[DocCommand]:
    """The shell commands of one page, with their markers."""
    name = str(page.relative_to(root))
    found: list[DocCommand] = []
    for language, first_line, body in fenced_blocks(page.read_text(encoding="utf-8")):
        if language not in SHELL_LANGUAGES:
            continue
        lines = body.split("\n")
        block_needs: set[str] = set()
        pending: set[str] = set()
        seen_command = False
        index = 0
        while index < len(lines):
            line = lines[index]
            stripped = line.strip()
            where = f"{name}:{first_line + index}"
            if not stripped or stripped.startswith("#"):
                marked = _needs(stripped, where)
                if seen_command:
                    pending |= marked
                else:
                    block_needs |= marked
                index += 1
                continue
            if language == "console":  # a transcript: only the "$ " lines are commands, the rest is output
                if not stripped.startswith("$ "):
                    index += 1
                    continue
                line = line.replace("$ ", "", 1)
            start = index
            text = [line]
            while text[-1].rstrip().endswith("\\") and index + 1 < len(lines):
                index += 1
                text.append(lines[index])
            heredoc = HEREDOC.search("\n".join(text))
            if heredoc:
                terminator = heredoc.group(2)
                while index + 1 < len(lines) and lines[index].strip() != terminator:
                    index += 1
                    text.append(lines[index])
            command_text = "\n".join(text)
            first = command_text.split("\n", 1)[0] if heredoc else command_text
            found.append(DocCommand(name, first_line + start, command_text,
                                    block_needs | pending | _needs(first, where)))
            pending = set()
            seen_command = True
            index += 1
    return found


# -- the workspace ----------------------------------------------------------------------------------------------


def _build_kit(kit: Path) -> None:
    """The inputs the pages name, small: example images, tiny synthetic datasets, predictions to score."""
    import numpy as np
    from PIL import Image

    from leffa.synth.dataset import generate_dataset

    shutil.copytree(ROOT / "examples", kit / "examples")
    shutil.copytree(ROOT / "docs", kit / "docs")
    (kit / "tests").mkdir()
    (kit / "tests" / "fixtures").symlink_to(ROOT / "tests" / "fixtures")
    (kit / "benchmarks").symlink_to(ROOT / "benchmarks")
    for name in ("person.jpg", "garment.jpg", "mask.png", "densepose.jpg"):
        shutil.copy(ROOT / "examples" / name, kit / name)
    Image.open(kit / "densepose.jpg").save(kit / "densepose.png")
    for split, n in (("train", 2), ("test", 2)):
        generate_dataset("vton", kit / "data" / "synth", n, (64, 48), seed=0, split=split)
    shutil.copytree(kit / "data" / "synth", kit / "data" / "viton_hd")
    pose = kit / "pose"
    generate_dataset("pose", pose, 1, (64, 48), seed=0, split="test")
    target = sorted((pose / "test" / "image").glob("*_2.jpg"))[0]
    shutil.copy(target, kit / "target.jpg")
    shutil.copy(pose / "test" / "densepose" / f"{target.stem}.png", kit / "target_iuv.png")
    shutil.rmtree(pose)
    (kit / "data" / "test").mkdir(parents=True)
    shutil.copytree(kit / "data" / "synth" / "test" / "image", kit / "data" / "test" / "image")
    rng = np.random.default_rng(0)
    for run, noise in (("baseline", 24), ("leffa", 8)):
        folder = kit / "out" / run
        folder.mkdir(parents=True)
        for image in sorted((kit / "data" / "test" / "image").glob("*.jpg")):
            pixels = np.asarray(Image.open(image), dtype=np.int16) + rng.integers(-noise, noise + 1, (64, 48, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{image.stem}.png")


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs-kit")
    _build_kit(folder)
    return folder


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({
        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf"),
        "HF_HUB_CACHE": str(home / "hf" / "hub"), "TORCH_HOME": str(home / "torch"),
        "LEFFA_WEIGHTS": str(home / "weights"), "NO_COLOR": "1", "COLUMNS": "120",
    })  # fmt: skip
    env.pop("LEFFA_HUB_ENDPOINT", None)
    env.pop("HF_ENDPOINT", None)
    return env


# -- the tests ------------------------------------------------------------------------------------------------------


def test_every_fenced_block_has_a_language():
    """An untagged block is neither run nor clearly not a command; ``text`` marks the ones that are not."""
    untagged = [
        f"{page.relative_to(ROOT)}:{line}"
        for page in PAGES
        for language, line, _ in fenced_blocks(page.read_text(encoding="utf-8"))
        if not language
    ]
    assert not untagged, f"fenced blocks without a language tag (use bash for commands, text otherwise): {untagged}"


def test_extraction_joins_continuations_heredocs_and_reads_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n# needs: gpu\nleffa a \\\n  --x 1\n```\n\n"
        "```bash\nleffa b  # needs: weights, dataset\n# plain comment\nleffa c\n# needs: slow\n"
        "python - <<'PY'\nprint(1)  # not a marker: needs: nothing\nPY\n```\n"
        "```python\nleffa d\n```\n"
    )
    found = commands(page, root=tmp_path)
    assert [(c.line, c.text.split()[1] if c.text.startswith("leffa") else "heredoc", c.needs) for c in found] == [
        (3, "a", {"gpu"}), (8, "b", {"weights", "dataset"}), (10, "c", set()), (12, "heredoc", {"slow"}),
    ]
    assert found[0].text == "leffa a \\\n  --x 1" and found[3].text.endswith("PY")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_documented_commands_run_as_written(page, kit, tmp_path):
    found = commands(page)
    runnable = [c for c in found if not c.needs]
    if not found:
        pytest.skip("no shell commands on this page")
    if not runnable:
        reasons = sorted({NEEDS[n] for c in found for n in c.needs})
        pytest.skip(f"all {len(found)} commands are marked: {'; '.join(reasons)}")
    workspace = tmp_path / "work"
    shutil.copytree(kit, workspace, symlinks=True)
    env = _environment(tmp_path / "home")
    exports: list[str] = []
    for command in found:
        if command.needs:
            continue
        text = PIP_PREFIX.sub("", command.text)
        script = "\n".join(["set -euo pipefail", *exports, text])
        result = subprocess.run(["bash", "-c", script], cwd=workspace, env=env, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 0, (
            f"{command.where}: `{text.splitlines()[0]}` exited {result.returncode}:\n{output[-2000:]}\n"
            "(fix the command or the code; if it cannot run offline, mark it '# needs: weights|gpu|dataset|slow')"
        )
        if re.match(r"^\s*(export|cd)\s", text):  # state later commands of the page run in
            exports.append(text)


# -- options of every documented leffa command, marked or not ----------------------------------------------------

SEPARATORS = {"&&", "||", "|", ";"}
REDIRECTIONS = re.compile(r"^\d*[<>]{1,2}&?\d*$")


def leffa_invocations(command: DocCommand) -> list[list[str]]:
    """The argument lists of the ``leffa`` calls in one command (also ``accelerate launch -m leffa_cli.app`` and
    ``python -m leffa_cli.app``), without environment assignments and redirections."""
    import shlex

    first = command.text.split("\n", 1)[0] if HEREDOC.search(command.text) else command.text
    words = shlex.split(first.replace("\\\n", " "), comments=True)
    calls, segment = [], []
    for word in [*words, ";"]:
        if word in SEPARATORS:
            while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):
                segment.pop(0)
            for prefix in (["leffa"], ["accelerate", "launch", "-m", "leffa_cli.app"], ["python", "-m", "leffa_cli.app"]):
                if segment[: len(prefix)] == prefix:
                    calls.append(segment[len(prefix):])
            segment = []
        else:
            segment.append(word)
    cleaned = []
    for call in calls:
        args, skip = [], False
        for word in call:
            if skip:
                skip = False
            elif REDIRECTIONS.match(word):
                skip = True  # the file name follows
            else:
                args.append(word)
        cleaned.append(args)
    return cleaned


def option_problems(found: list[DocCommand]) -> tuple[list[str], int]:
    """Unknown subcommands or options in the ``leffa`` calls of ``found``, and how many calls were checked."""
    import typer

    from leffa_cli.app import build_app

    root = typer.main.get_command(build_app())  # Typer's own (vendored) click classes: checked by duck typing
    problems, checked = [], 0
    for command in found:
        for args in leffa_invocations(command):
            node, rest = root, list(args)
            while hasattr(node, "commands") and rest and rest[0] in node.commands:
                node = node.commands[rest.pop(0)]
            if hasattr(node, "commands"):
                problems.append(f"{command.where}: `leffa {' '.join(args)}`: no such command")
                continue
            try:
                node.make_context("leffa", rest)  # parses and converts the arguments; runs nothing
                checked += 1
            except Exception as error:  # click's UsageError family: unknown option, bad value, missing argument
                if not hasattr(error, "format_message"):
                    raise
                problems.append(f"{command.where}: `leffa {' '.join(args)}`: {error.format_message()}")
    return problems, checked


def test_documented_leffa_commands_use_existing_commands_and_options():
    """Also the commands marked as needing weights, a GPU or a dataset: their subcommands and options exist."""
    problems, checked = option_problems([c for page in PAGES for c in commands(page)])
    assert checked > 20
    assert not problems, "\n".join(problems)


def test_option_check_finds_unknown_options_and_commands():
    made_up = [
        DocCommand("p.md", 1, "OMP_NUM_THREADS=1 leffa prep synth -o d --n 2 > log.txt && leffa eval --bogus 1"),
        DocCommand("p.md", 2, "accelerate launch -m leffa_cli.app train --no-such-flag  # needs: gpu"),
        DocCommand("p.md", 3, "leffa prep nothing x"),
    ]
    problems, checked = option_problems(made_up)
    assert checked == 1
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3"]
    assert "--bogus" in problems[0] and "--no-such-flag" in problems[1] and "no such command" in problems[2]
