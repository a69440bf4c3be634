"""Sharded batch runs: ``torchrun --nproc_per_node 2`` (gloo, CPU) writes every output once, the same pixels as one
process, skips finished outputs on a rerun, and reports bad pairs before any model loads."""

from __future__ import annotations

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
        Image.fromarray(mask).resize((40, 40) if name == bad else PHOTO).save(root / "agnostic-mask" / f"{name}_mask.png")
        noise(PHOTO).save(root / "image-densepose" / f"{name}.png")
    (root / "pairs.txt").write_text("".join(f"{a}.png {b}.png\n" for a, b in zip(NAMES, reversed(NAMES))))
    return root


def _torchrun(args, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "leffa_cli.app", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)


def _batch_args(data: Path, out: Path, model: Path) -> list:
    return ["tryon", "--batch", data, "--pairs", data / "pairs.txt", "-o", out, "--model", model, "--steps", "2",
            "--batch-size", "2", "--device", "cpu"]


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
    item = lambda name: DatasetItem(data / "image" / f"{name}.png", data / "cloth" / f"{name}.png",
                                    data / "agnostic-mask" / f"{name}_mask.png",
                                    data / "image-densepose" / f"{name}.png", tmp_path / "o.png")
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
    assert len(expected) == 4 and "00002_00_00004_00.png" not in expected

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
    assert sorted(p.name for p in sharded.iterdir()) == sorted([*expected, "00002_00_00004_00.png"])
    assert Image.open(sharded / expected[1]).tobytes() == Image.open(single / expected[1]).tobytes()


def test_output_path_that_is_a_file_fails_before_loading(files, tmp_path, capsys):  # noqa: F811
    data = _viton_hd(tmp_path / "data")
    out = tmp_path / "out"
    out.write_text("a file")
    code, _, err = run(_batch_args(data, out, tmp_path / "no-such-model.safetensors"), capsys)
    assert code == 2 and f"-o {out}: is a file, not a folder" in err
    assert "no-such-model" not in err  # refused before the model was looked at
