"""Every ``python`` block of docs/python.md (and of the README) runs as written, offline, with synth-tiny.

Blocks run in page order in one namespace (as a reader would paste them into one session), in a folder holding the
inputs the page names. A block whose first lines carry ``# needs: weights|gpu|dataset|slow`` (the markers the shell
docs test uses) is skipped; every other block must run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python.md"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
NEEDS = re.compile(r"^#\s*needs:\s*([a-z, ]+)$", re.M)


def python_blocks(page: Path = PAGE) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` for each python block of ``page``."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("info").strip() != "python":
            continue
        body = match.group("body")
        head = "\n".join(body.splitlines()[:2])
        blocks.append((text.count("\n", 0, match.start("body")) + 1, body, bool(NEEDS.search(head))))
    return blocks


def _kit(folder: Path) -> None:
    """The inputs the page names: a 96x128 person photo with its mask and DensePose, a garment, a pose target."""
    rng = np.random.default_rng(0)
    photo = (128, 96)  # (H, W)
    Image.fromarray(rng.integers(0, 256, (*photo, 3), dtype=np.uint8)).save(folder / "person.jpg")
    Image.fromarray(rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)).save(folder / "garment.jpg")
    mask = np.zeros(photo, np.uint8)
    mask[40:100, 20:76] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(rng.integers(0, 256, (*photo, 3), dtype=np.uint8)).save(folder / "densepose.jpg")
    Image.fromarray(rng.integers(0, 256, (112, 84, 3), dtype=np.uint8)).save(folder / "target.jpg")
    iuv = np.stack(
        [rng.integers(0, 256, (112, 84)), rng.integers(0, 256, (112, 84)), rng.integers(0, 25, (112, 84))], axis=-1
    ).astype(np.uint8)
    Image.fromarray(iuv).save(folder / "target_iuv.png")


def test_the_page_has_runnable_and_marked_blocks():
    blocks = python_blocks()
    assert sum(not skipped for _, _, skipped in blocks) >= 6
    assert any(skipped for _, _, skipped in blocks)


def test_python_docs_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _kit(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "__docs__"}
    try:
        for line, code, skipped in python_blocks():
            if skipped:
                continue
            try:
                exec(compile(code, f"{PAGE}:{line}", "exec"), namespace)  # noqa: S102 - the docs' own examples
            except Exception as error:  # noqa: BLE001 - report which block failed
                pytest.fail(f"docs/python.md:{line}: {type(error).__name__}: {error}")
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "no-such-photo.jpg: person photo not found" in out
    assert Image.open(tmp_path / "result.png").size == (96, 128)
    assert Image.open(tmp_path / "posed.png").size == (84, 112)


def test_readme_python_block_runs(tmp_path, monkeypatch):
    import shutil

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocks = python_blocks(ROOT / "README.md")
    assert blocks
    for line, code, skipped in blocks:
        if not skipped:
            exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__docs__"})  # noqa: S102
    assert (tmp_path / "out.png").is_file()
