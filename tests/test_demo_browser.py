"""``leffa demo`` driven in a real headless Chromium (Playwright, the OS's Chromium): upload, correct the mask with a
slider and the brush, generate, download. Offline, ``synth-tiny``, two steps."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from extras import need, need_chromium
from PIL import Image

need("gradio", "playwright")
CHROMIUM = need_chromium()
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from playwright.sync_api import sync_playwright  # noqa: E402

from leffa.mask_edit import MaskEdit, edit_mask  # noqa: E402
from leffa.pipelines import TryOnPipeline  # noqa: E402

EXAMPLES = Path(__file__).parent.parent / "examples"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT = 60_000  # ms, for one wait on a loaded 2-core machine


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    from huggingface_hub import constants

    from leffa.app.demo import build_demo

    # No automatic-condition weights, whatever this machine has cached: uploads without a mask get the offline error.
    patch = pytest.MonkeyPatch()
    patch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub")))
    patch.setenv("LEFFA_WEIGHTS", str(tmp_path_factory.mktemp("empty-weights")))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = TryOnPipeline.from_pretrained("synth-tiny", device="cpu", dtype="fp32", offline=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_demo(pipe, EXAMPLES, steps=2)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()
    torch.set_num_threads(previous)
    patch.undo()


def _shown_mask(page) -> np.ndarray:
    """The "Mask used" picture on the page, as a bool array."""
    src = page.locator("#mask-used img").first.get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("L")) > 127


def _wait_status(page, text: str) -> str:
    page.wait_for_function(
        "t => (document.querySelector('#status')?.innerText || '').includes(t)", arg=text, timeout=TIMEOUT
    )
    return page.inner_text("#status")


def _wait_mask(page, changed_from: np.ndarray) -> np.ndarray:
    for _ in range(TIMEOUT // 250):
        mask = _shown_mask(page)
        if mask.shape != changed_from.shape or (mask != changed_from).any():
            return mask
        page.wait_for_timeout(250)
    raise AssertionError("the mask shown never changed")


def test_upload_correct_the_mask_generate_and_download(demo_url, tmp_path):
    base = np.asarray(Image.open(EXAMPLES / "mask.png").convert("L")) > 127
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        page.goto(demo_url)
        _wait_status(page, "ready")  # the preloaded example: mask and DensePose shown
        assert np.array_equal(_shown_mask(page), base)

        # Upload a photo: its conditions are gone, and offline there are no automatic ones: a one-line error.
        page.locator("#person input[type=file]").set_input_files(str(EXAMPLES / "person.jpg"))
        lines = [line for line in _wait_status(page, "Error").splitlines() if "Error:" in line]
        assert len(lines) == 1 and "give the mask yourself" in lines[0], lines  # the library's one line
        page.locator("#mask-upload input[type=file]").set_input_files(str(EXAMPLES / "mask.png"))
        page.wait_for_timeout(500)
        page.locator("#densepose-upload input[type=file]").set_input_files(str(EXAMPLES / "densepose.jpg"))
        _wait_status(page, "ready")
        assert np.array_equal(_shown_mask(page), base)

        # Grow by 5 px: the page shows the library's edit of the mask, pixel for pixel.
        grow = page.locator("#grow input[type=number]")
        grow.fill("5")
        grow.press("Enter")
        grown = _wait_mask(page, base)
        expected = np.asarray(edit_mask(Image.open(EXAMPLES / "mask.png"), MaskEdit(grow=5))) > 127
        assert np.array_equal(grown, expected)

        # Paint a white stroke across the legs (outside the mask): those pixels join it.
        page.get_by_role("button", name="Brush", exact=True).click()
        canvas = page.locator("#mask-editor canvas").last
        box = canvas.bounding_box()
        y = box["y"] + box["height"] * 0.7
        page.mouse.move(box["x"] + box["width"] * 0.4, y)
        page.mouse.down()
        for step in range(12):
            page.mouse.move(box["x"] + box["width"] * (0.4 + 0.2 * step / 11), y)
        page.mouse.up()
        painted = _wait_mask(page, grown)
        assert painted.sum() > grown.sum() and (painted & grown).sum() == grown.sum()  # added, nothing lost
        added_rows = np.flatnonzero((painted & ~grown).any(axis=1))
        assert added_rows.min() > np.flatnonzero(grown.any(axis=1)).max()  # below the shirt

        page.locator("#generate").click()
        done = _wait_status(page, "Done")
        assert "2 steps" in done
        with page.expect_download(timeout=TIMEOUT) as download:
            page.locator("#download").click()
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        browser.close()
    result = Image.open(saved)
    assert saved.suffix == ".png" and result.size == Image.open(EXAMPLES / "person.jpg").size
    person = np.asarray(Image.open(EXAMPLES / "person.jpg").convert("RGB"), dtype=np.int32)
    changed = np.abs(np.asarray(result.convert("RGB"), dtype=np.int32) - person).sum(axis=-1) > 0
    assert changed[painted].mean() > 0.5  # repaint (on by default): the masked region is redrawn ...
    far = ~(np.asarray(edit_mask(Image.fromarray(painted.astype(np.uint8) * 255), MaskEdit(grow=8))) > 127)
    assert changed[far].mean() < 0.05  # ... and the pixels well outside it are the photo's own
