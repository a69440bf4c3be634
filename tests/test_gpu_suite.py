"""``benchmarks/gpu_suite.py`` runs end to end at tiny size on the CPU and writes its JSON and markdown."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_suite(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_suite

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield gpu_suite
    torch.set_num_threads(previous)
    sys.modules.pop("gpu_suite", None)


def test_gpu_suite_tiny_writes_every_section(gpu_suite, tmp_path):
    grad_enabled = torch.is_grad_enabled()
    gpu_suite.main(["--tiny", "--out", str(tmp_path)])
    assert torch.is_grad_enabled() == grad_enabled  # in-process use leaves global state alone

    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["settings"]["tiny"] and report["settings"]["device"] == "cpu"
    tryon = {row["configuration"]: row for row in report["sections"]["tryon"]["rows"]}
    assert list(tryon) == [label for label, _, _ in gpu_suite.TRYON_CONFIGS]
    for row in tryon.values():
        assert row["s_per_image"] > 0 and row["speedup_vs_upstream"] > 0
    assert tryon["upstream-equivalent"]["speedup_vs_upstream"] == 1.0
    assert tryon["default"]["max_abs_diff_vs_upstream"] < 0.1  # bf16: same image up to rounding
    assert report["sections"]["tryon"]["attention"]["ours_s"] > 0

    memory = [row["variant"] for row in report["sections"]["memory"]["rows"]]
    assert memory[:3] == ["none", "model", "sequential"] and memory[3].startswith("attention slice")
    loss = report["sections"]["loss"]
    assert [row["variant"] for row in loss["rows"]] == ["diffusion", "fused"]
    assert all(row["seconds"] > 0 for row in loss["rows"]) and "time_overhead" in loss
    onnx = report["sections"]["onnx"]
    assert "skipped" in onnx or onnx["rows"][0]["s_per_image"] > 0
    assert any("tiny run" in line for line in report["goals"])

    text = (tmp_path / "gpu_suite.md").read_text()
    for title in (
        "### Try-on",
        "### Memory: offload and attention slicing",
        "### Leffa loss",
        "### ONNX Runtime",
        "### Goals",
        "| bf16 | torch.compile |",
        "| sequential |",
        "| fused |",
    ):
        assert title in text
