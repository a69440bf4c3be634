"""`leffa tryon --backend onnx` runs the same sampler through onnxruntime and writes the torch backend's image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leffa_cli.app import main

TINY_SD15 = Path(__file__).parent / "fixtures" / "upstream_parity" / "stable-diffusion-inpainting"
SIZE = (64, 48)
PHOTO = (48, 64)  # (W, H), already 3:4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from leffa.checkpoint import save_model
    from leffa.export.graphs import ExportOptions, export_onnx
    from leffa.model import LeffaModel

    root = tmp_path_factory.mktemp("onnx_tryon")
    torch.manual_seed(0)
    model = LeffaModel.from_base_folder(TINY_SD15).eval()
    model.config.extra["image_size"] = list(SIZE)
    save_model(model, root / "tiny.safetensors", dtype="fp32")
    # 64x48 gives 8x6 latents, not a multiple of the UNet's 8: fixed-size graphs handle it as torch does.
    export_onnx(model, root / "onnx", ExportOptions(height=SIZE[0], width=SIZE[1]))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (PHOTO[1], PHOTO[0], 3), dtype=np.uint8)).save(root / "person.png")
    Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(root / "garment.png")
    mask = np.zeros((PHOTO[1], PHOTO[0]), np.uint8)
    mask[20:50, 10:40] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(rng.integers(0, 256, (PHOTO[1], PHOTO[0], 3), dtype=np.uint8)).save(root / "densepose.png")
    return root


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def tryon(files, out, model, *extra):
    return [
        "tryon",
        files / "person.png",
        files / "garment.png",
        "-o",
        out,
        "--mask",
        files / "mask.png",
        "--densepose",
        files / "densepose.png",
        "--model",
        model,
        "--steps",
        "3",
        "--dtype",
        "fp32",
        "--device",
        "cpu",
        *extra,
    ]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_onnx_backend_tryon_matches_torch_backend(files, tmp_path, capsys):
    torch_out, onnx_out, other_seed = tmp_path / "torch.png", tmp_path / "onnx.png", tmp_path / "seed.png"
    code, _, err = run(tryon(files, torch_out, files / "tiny.safetensors"), capsys)
    assert code == 0, err
    code, stdout, err = run(tryon(files, onnx_out, files / "onnx", "--backend", "onnx"), capsys)
    assert code == 0 and str(onnx_out) in stdout, err
    code, _, err = run(tryon(files, other_seed, files / "onnx", "--backend", "onnx", "--seed", "7"), capsys)
    assert code == 0, err
    a, b, c = (np.asarray(Image.open(p)) for p in (torch_out, onnx_out, other_seed))
    assert a.shape == b.shape == (PHOTO[1], PHOTO[0], 3)
    assert psnr(a, b) > 45  # 8-bit images; fp32 graphs differ from torch by ~1e-5 before rounding
    assert psnr(a, c) < 35  # a different seed is far outside that bound


def test_onnx_backend_refuses_a_size_the_graphs_were_not_exported_for(files, tmp_path, capsys):
    code, _, err = run(
        tryon(files, tmp_path / "x.png", files / "onnx", "--backend", "onnx", "--size", "128x96"), capsys
    )
    assert code == 2 and "exported for 64x48" in err


def test_onnx_backend_needs_an_export_folder(files, tmp_path, capsys):
    code, _, err = run(tryon(files, tmp_path / "x.png", files / "tiny.safetensors", "--backend", "onnx"), capsys)
    assert code == 2 and "manifest.json" in err


def test_dynamic_export_by_name_serves_the_trained_size(files, tmp_path, capsys):
    """`leffa export --onnx DIR --model synth-tiny` (dynamic), then `tryon --backend onnx` with no --size works at the
    model's trained 64x48 (size read from the export's manifest)."""
    code, _, err = run(["export", "--onnx", tmp_path / "st", "--model", "synth-tiny"], capsys)
    assert code == 0, err
    torch_out, onnx_out = tmp_path / "torch.png", tmp_path / "onnx.png"
    assert run(tryon(files, torch_out, "synth-tiny"), capsys)[0] == 0
    code, _, err = run(tryon(files, onnx_out, tmp_path / "st", "--backend", "onnx"), capsys)
    assert code == 0 and "no size recorded" not in err, err
    a, b = (np.asarray(Image.open(p)) for p in (torch_out, onnx_out))
    assert psnr(a, b) > 45
