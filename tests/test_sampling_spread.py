"""benchmarks/sampling_spread.py separates a sampler's scatter from a model's bias (docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "sampling_spread.py"
TRUTH = np.full((16, 12, 3), 128, np.uint8)  # a grey image, all of it inside the mask
MASK = np.full((16, 12), 255, np.uint8)


def _run_folder(root: Path, name: str, truth: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> Path:
    folder = root / name
    for sub, array in (("gt", truth), ("pred", pred), ("mask", mask)):
        (folder / sub).mkdir(parents=True)
        Image.fromarray(array).save(folder / sub / "000000.png")
    return folder


def _spread(*runs: Path) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_samples_scattered_around_the_truth_average_to_it(tmp_path):
    runs = [
        _run_folder(tmp_path, f"seed-{i}", TRUTH, (TRUTH.astype(np.int16) + 20 * (-1) ** i).astype(np.uint8), MASK)
        for i in range(2)
    ]
    out = _spread(*runs)
    assert "| mean of 2 samples | 100.00 |" in out  # the two errors cancel: all of the error was spread
    assert "share of one sample's squared error: 100%" in out


def test_samples_wrong_together_gain_nothing_from_averaging(tmp_path):
    runs = [_run_folder(tmp_path, f"seed-{i}", TRUTH, TRUTH + 20, MASK) for i in range(2)]
    out = _spread(*runs)
    one = out.split("| one sample (mean over seeds; min - max) | ")[1].split(" ")[0]
    assert f"| mean of 2 samples | {one} |" in out
    assert "share of one sample's squared error: 0%" in out


def test_one_run_is_a_clear_error(tmp_path):
    run = _run_folder(tmp_path, "seed-0", TRUTH, TRUTH, MASK)
    result = subprocess.run([sys.executable, str(SCRIPT), str(run)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "at least two runs" in result.stderr.splitlines()[-1]
