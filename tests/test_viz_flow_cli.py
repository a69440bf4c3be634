"""``leffa viz-flow`` end to end on the tiny model: outputs, model loading, and one-line errors with nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PARITY, TINY_SD15
from PIL import Image

from leffa_cli.app import main

SIZE = (128, 96)  # the size the upstream parity fixtures were made at


def run(argv, capsys):
    try:
        main([str(arg) for arg in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny saved model (image_size 128x96) and a person/garment pair where the garment is the person shifted."""
    from leffa.checkpoint import save_model
    from leffa.model import LeffaModel

    folder = tmp_path_factory.mktemp("vizflow")
    torch.manual_seed(0)
    model = LeffaModel.from_base_folder(TINY_SD15)
    model.config.extra["image_size"] = list(SIZE)
    save_model(model, folder / "tiny.safetensors", dtype="fp32")
    rng = np.random.default_rng(0)
    person = (rng.random((*SIZE, 3)) * 255).astype(np.uint8)
    Image.fromarray(person).save(folder / "person.png")
    Image.fromarray(np.roll(person, 4, axis=1)).save(folder / "garment.png")
    mask = np.zeros(SIZE, np.uint8)
    mask[30:90, 20:76] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(folder / "densepose.png")
    ys, xs = np.mgrid[0 : SIZE[0], 0 : SIZE[1]].astype(np.float32)
    gt = np.stack([(2 * (xs + 4) + 1) / SIZE[1] - 1, (2 * ys + 1) / SIZE[0] - 1], axis=-1).astype(np.float32)
    gt[xs + 4 >= SIZE[1]] = np.nan
    np.save(folder / "gt.npy", gt)
    return folder


def test_writes_grid_and_html(inputs, tmp_path, capsys):
    out, page = tmp_path / "flow.png", tmp_path / "flow.html"
    code, stdout, stderr = run(
        [
            "viz-flow",
            inputs / "person.png",
            inputs / "garment.png",
            "--model",
            inputs / "tiny.safetensors",
            "--mask",
            inputs / "mask.png",
            "--densepose",
            inputs / "densepose.png",
            "--target",
            inputs / "person.png",
            "--gt-flow",
            inputs / "gt.npy",
            "--points",
            "10,20",
            "--html",
            page,
            "-o",
            out,
            "--t",
            "100",
            "--layers",
            "down0.a0.b0,up_blocks.2.attentions.1.transformer_blocks.0.attn1",
        ],
        capsys,
    )
    assert code == 0, stderr
    assert f"wrote {out} (2 layers" in stdout
    picture = Image.open(out)
    # inputs row: reference, target, mask, GT flow, warped by GT, wheel (6); layer rows: flow, warped, error, 1 heatmap
    tile_width, tile_height = 224 * SIZE[1] // SIZE[0], 224 + 34
    assert picture.size == (6 * (tile_width + 4) + 4, 3 * (tile_height + 4) + 4)
    text = page.read_text()
    assert text.count('class="layer"') == 2 and "up_blocks.2.attentions.1.transformer_blocks.0.attn1" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.html", "flow.png"]


def test_upstream_checkpoint_with_base_folder(inputs, tmp_path, capsys):
    out = tmp_path / "flow.png"
    argv = [
        "viz-flow",
        inputs / "person.png",
        inputs / "garment.png",
        "--model",
        PARITY / "sd15_seed0.pth",
        "--size",
        "64x48",
        "--layers",
        "mid.a0.b0",
        "-o",
        out,
    ]
    code, stdout, stderr = run([*argv, "--base", TINY_SD15], capsys)
    assert code == 0, stderr
    assert Image.open(out).height == 2 * (224 + 34 + 4) + 4  # inputs row + one layer
    out.unlink()
    code, _, stderr = run(argv, capsys)
    assert code == 2 and "holds no model config; give the base-model folder" in stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--points", "10;20"], "--points '10': expected x,y"),
        (["--points", "12,abc"], "--points '12,abc': expected x,y"),
        (["--points", "96,10"], "--points '96,10': outside the 128x96 image"),
        (["--points", "5,5", "--size", "64x48", "--points", "50,10"], "--points '50,10': outside the 64x48 image"),
        (["--layers", "up1.a0.b0,nope"], "--layers 'nope': no such self-attention layer; this model has: down0.a0.b0"),
        (["--t", "1000"], "--t 1000: the timestep must be in 0..999"),
        (["--size", "100x96"], "--size 100x96: height and width must be multiples of 8"),
        (["--gt-flow", "missing.npy"], "--gt-flow missing.npy: file not found"),
        (["--html", "page.htm"], "--html page.htm: must end in .html"),
        (["--device", "gpu7"], "--device: unknown device 'gpu7'"),
        (["--model", "no-such-model"], "--model: 'no-such-model' is not a known model"),
        (["--wheel-radius", "0"], "--wheel-radius 0.0: must be positive"),
    ],
)
def test_user_mistakes_exit_2_with_one_line_and_write_nothing(inputs, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    argv = [
        "viz-flow",
        inputs / "person.png",
        inputs / "garment.png",
        "--model",
        inputs / "tiny.safetensors",
        "-o",
        tmp_path / "flow.png",
        *extra,
    ]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert stderr.startswith("leffa: error: " + message), stderr
    assert stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_probe_is_seeded_and_returns_every_layer_on_its_token_grid(tiny_model):
    from leffa.probe import probe_flows

    size = (64, 48)
    generator = torch.Generator().manual_seed(1)
    person, garment = (torch.rand(1, 3, *size, generator=generator) * 2 - 1 for _ in range(2))
    first = probe_flows(tiny_model, person, garment, timestep=500, seed=3, points=[(5, 7)])
    again = probe_flows(tiny_model, person, garment, timestep=500, seed=3, points=[(5, 7)])
    other = probe_flows(tiny_model, person, garment, timestep=500, seed=4, points=[(5, 7)])
    assert list(first.flows) == tiny_model.layer_names  # all layers, in execution order
    for name, scale in tiny_model.layer_downscale().items():
        grid = (-(-size[0] // scale), -(-size[1] // scale))
        assert first.flows[name].shape == (1, *grid, 2)
        assert first.attention[name].shape == (1, 1, *grid)
        torch.testing.assert_close(first.attention[name].sum(dim=(-2, -1)), torch.ones(1, 1))
        assert torch.equal(first.flows[name], again.flows[name])
    assert any(not torch.equal(first.flows[name], other.flows[name]) for name in first.flows)
