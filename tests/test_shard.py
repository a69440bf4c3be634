"""Sharded batch runs: ``torchrun --nproc_per_node 2`` (gloo, CPU) writes every output once, the same pixels as one
process, skips finished outputs on a rerun, and reports bad pairs before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from test_tryon_cli import files, one_thread, run  # noqa: F401 - fixtures (one thread, as the launched processes)

from leffa.pipeline import DatasetItem, input_problem
from leffa.shard import Shard

NAMES = ["00001_00", "00002_00", "00003_00", "00004_00", "00005_00"]
PHOTO = (50, 80)  # (W, H), as test_tryon_cli's


def _viton_hd(root: Path, bad: str | None = None) -> Path:
    """A VITON-HD-layout folder whose every pair differs; ``bad``'s mask has the wrong size."""
    rng = np.random.default_rng(1)
    for folder in ("image", "cloth", "agnostic-mask", "image-densepose"):
        (root / folder).mkdir(parents=True)
    for name in NAMES:
        noise = lambda size: Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        noise(PHOTO).save(root / "image" / f"{name}.png")
        noise((48, 64)).save(root / "cloth" / f"{name}.png")
        mask = np.zeros((PHOTO[1], PHOTO[0]), np.uint8)
        mask[20 + NAMES.index(name) * 4 : 60, 10:40] = 255
        mask_image = Image.fromarray(mask).resize((40, 40) if name == bad else PHOTO)
        mask_image.save(root / "agnostic-mask" / f"{name}_mask.png")
        noise(PHOTO).save(root / "image-densepose" / f"{name}.png")
    (root / "pairs.txt").write_text("".join(f"{a}.png {b}.png\n" for a, b in zip(NAMES, reversed(NAMES))))
    return root


def _torchrun(args, cwd: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "leffa_cli.app",
        "--",
        *map(str, args),
    ]  # "--": torchrun's parser would claim eval's --run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)


def _batch_args(data: Path, out: Path, model: Path) -> list:
    return [
        "tryon",
        "--batch",
        data,
        "--pairs",
        data / "pairs.txt",
        "-o",
        out,
        "--model",
        model,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]


def test_shard_takes_every_world_th_item_and_pins_its_gpu():
    import torch

    items = list(range(7))
    shards = [Shard(rank, 3) for rank in range(3)]
    assert [shard.take(items) for shard in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(item for shard in shards for item in shard.take(items)) == items
    gpu = Shard(1, 2, torch.device("cuda", 1))
    assert gpu.device_for("auto") == "cuda:1" and gpu.device_for("cpu") == "cpu"
    assert Shard().device_for("auto") == "auto" and Shard.current() == Shard()


def test_input_problem_reads_headers_only(tmp_path):
    data = _viton_hd(tmp_path / "data", bad="00002_00")
    item = lambda name: DatasetItem(
        data / "image" / f"{name}.png",
        data / "cloth" / f"{name}.png",
        data / "agnostic-mask" / f"{name}_mask.png",
        data / "image-densepose" / f"{name}.png",
        tmp_path / "o.png",
    )
    assert input_problem(item("00001_00")) is None
    assert "garment mask is 40x40 but the person photo is 50x80" in input_problem(item("00002_00"))
    (data / "cloth" / "00003_00.png").write_bytes(b"not an image")
    assert "garment image is not an image" in input_problem(item("00003_00"))
    (data / "image" / "00004_00.png").unlink()
    assert "person photo not found" in input_problem(item("00004_00"))


def test_two_processes_write_each_output_once_with_single_process_pixels(files, tmp_path, capsys):  # noqa: F811
    data = _viton_hd(tmp_path / "data", bad="00002_00")
    model = files / "tiny.safetensors"
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    code, _, err = run(_batch_args(data, single, model), capsys)
    assert code == 2 and "1 of 5 pairs skipped for bad inputs" in err
    assert "skipped: " in err and "00002_00_mask.png: garment mask is 40x40" in err
    expected = sorted(p.name for p in single.iterdir())
    assert len(expected) == 4 and "00002_00__00004_00.png" not in expected

    result = _torchrun(_batch_args(data, sharded, model), tmp_path)
    assert result.returncode != 0  # the main process reports the bad pair after every good output is written
    assert result.stderr.count("1 of 5 pairs skipped for bad inputs") == 1  # said once, by the main process
    assert "try-on (2 processes)" in result.stderr and "4/4" in result.stderr
    assert sorted(p.name for p in sharded.iterdir()) == expected  # no temporary files left, nothing twice
    for name in expected:
        assert Image.open(sharded / name).tobytes() == Image.open(single / name).tobytes(), name

    # A rerun makes only what is missing.
    (sharded / expected[1]).unlink()
    stamps = {name: (sharded / name).stat().st_mtime_ns for name in expected if name != expected[1]}
    (data / "agnostic-mask" / "00002_00_mask.png").unlink()
    Image.open(data / "agnostic-mask" / "00001_00_mask.png").save(data / "agnostic-mask" / "00002_00_mask.png")
    result = _torchrun(_batch_args(data, sharded, model), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 outputs already exist; skipped" in result.stderr
    assert {name: (sharded / name).stat().st_mtime_ns for name in stamps} == stamps
    assert sorted(p.name for p in sharded.iterdir()) == sorted([*expected, "00002_00__00004_00.png"])
    assert Image.open(sharded / expected[1]).tobytes() == Image.open(single / expected[1]).tobytes()


def test_output_path_that_is_a_file_fails_before_loading(files, tmp_path, capsys):  # noqa: F811
    data = _viton_hd(tmp_path / "data")
    out = tmp_path / "out"
    out.write_text("a file")
    code, _, err = run(_batch_args(data, out, tmp_path / "no-such-model.safetensors"), capsys)
    assert code == 2 and f"-o {out}: is a file, not a folder" in err
    assert "no-such-model" not in err  # refused before the model was looked at


def test_eval_run_under_two_processes_equals_one(tmp_path, capsys):
    import torch
    from conftest import TINY_SD15
    from test_eval_cli import run as eval_run
    from test_metrics_flow import write_flow_dataset

    from leffa.checkpoint import save_model
    from leffa.model import LeffaModel

    torch.manual_seed(0)
    model = tmp_path / "tiny.safetensors"
    save_model(LeffaModel.from_base_folder(TINY_SD15).eval(), model, dtype="fp32")
    root = write_flow_dataset(tmp_path / "data", names=("s0", "s1", "s2"))
    args = [
        "eval",
        "--run",
        "--model",
        model,
        "--data",
        root,
        "--size",
        "64x48",
        "--steps",
        "2",
        "--metrics",
        "ssim,psnr",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--batch-size",
        "1",
    ]
    code, _, err = eval_run(capsys, *map(str, args), "--out-dir", str(tmp_path / "single"))
    assert code == 0, err
    result = _torchrun([*args, "--out-dir", tmp_path / "sharded"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("images generated into") == 1  # said (and scored) by the main process alone
    for folder in ("pred", "gt"):
        names = sorted(p.name for p in (tmp_path / "single" / folder).iterdir())
        assert names == ["s0.png", "s1.png", "s2.png"]
        assert sorted(p.name for p in (tmp_path / "sharded" / folder).iterdir()) == names
        for name in names:
            single = Image.open(tmp_path / "single" / folder / name).tobytes()
            assert Image.open(tmp_path / "sharded" / folder / name).tobytes() == single, (folder, name)
    scores = [json.loads((tmp_path / name / "eval.json").read_text())["metrics"] for name in ("single", "sharded")]
    assert scores[0] == scores[1]


def test_pose_batch_folder(files, tmp_path, capsys):  # noqa: F811
    root, out = tmp_path / "split", tmp_path / "out"
    (root / "image").mkdir(parents=True)
    (root / "densepose").mkdir()
    Image.open(files / "person.png").save(root / "image" / "a.jpg", quality=95)
    Image.open(files / "garment.jpg").resize(PHOTO).save(root / "image" / "b.jpg", quality=95)
    Image.open(files / "iuv.png").save(root / "densepose" / "b.png")
    Image.open(files / "iuv.png").resize((20, 20)).save(root / "densepose" / "a.png")  # wrong size: skipped
    (root / "pairs.txt").write_text("a.jpg b.jpg\nb.jpg a.jpg\n")
    code, _, err = run(
        [
            "pose",
            "--batch",
            root,
            "--pairs",
            root / "pairs.txt",
            "-o",
            out,
            "--model",
            files / "tiny.safetensors",
            "--steps",
            "2",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 2 and "1 of 2 pairs skipped" in err and "DensePose IUV is 20x20" in err
    assert [p.name for p in out.iterdir()] == ["b__a.png"]
    single = tmp_path / "single.png"
    code, _, err = run(
        [
            "pose",
            root / "image" / "a.jpg",
            root / "image" / "b.jpg",
            "-o",
            single,
            "--densepose",
            root / "densepose" / "b.png",
            "--model",
            files / "tiny.safetensors",
            "--steps",
            "2",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code in (0, None), err
    assert Image.open(out / "b__a.png").tobytes() == Image.open(single).tobytes()
