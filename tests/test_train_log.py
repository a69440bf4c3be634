"""``leffa train`` you can watch: without a terminal (nohup, CI, a pipe) it logs plain lines with losses, speed and ETA."""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch
from test_train import TINY_ARGS, vitonhd  # noqa: F401  (fixture)
from typer.testing import CliRunner

from leffa_cli.app import build_app
from leffa_cli.commands.train import log_line


def test_log_line_shows_losses_speed_and_time_left():
    report = SimpleNamespace(
        step=50, max_steps=150, loss=0.1234, diffusion=0.1, leffa=0.0234, steps_per_second=2.0, lr=5e-4
    )
    line = log_line(report, leffa=True)
    assert "step 50/150" in line and "loss 0.1234" in line and "leffa 0.0234" in line and "2.00 steps/s" in line
    assert re.search(r"ETA \d\d:\d\d:\d\d \(0\.8 min\)", line)  # 100 steps left at 2 steps/s
    assert "leffa" not in log_line(report, leffa=False)


def test_train_without_a_terminal_logs_every_n_steps(vitonhd, tmp_path):  # noqa: F811
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            build_app(),
            [
                "train",
                "--task",
                "vton",
                "--stage",
                "1",
                "--data",
                str(vitonhd),
                "--output",
                str(tmp_path / "run"),
                "--max-steps",
                "3",
                "--log-every",
                "2",
                "--threads",
                "1",
                *TINY_ARGS,
            ],
        )
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    lines = [line for line in result.output.splitlines() if " step " in f" {line}"]
    assert [re.search(r"step (\d+)/3", line).group(1) for line in lines] == ["2", "3"]  # every 2 steps and the last
    assert all("diffusion" in line and "steps/s" in line and "ETA" in line for line in lines)


def test_train_curves_reads_the_log_lines(tmp_path):
    """benchmarks/train_curves.py (docs/synthetic.md's curve tables) parses exactly what ``log_line`` writes."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "train_curves", Path(__file__).parents[1] / "benchmarks" / "train_curves.py"
    )
    curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curves)
    lines = []
    for step in (25, 50, 75, 100, 125):
        report = SimpleNamespace(
            step=step, max_steps=125, loss=step / 100, diffusion=step / 1000, leffa=0.5, steps_per_second=2.0, lr=1e-3
        )
        lines.append(log_line(report, leffa=True))
    log = tmp_path / "run.log"
    log.write_text("leffa: note: no checkpoint\n" + "\n".join(lines) + "\n" + lines[0] + "\n")  # a resumed repeat
    rows = curves.read_log(log)
    assert [step for step, _ in rows] == [25, 50, 75, 100, 125]
    (first, last, means), (first2, last2, means2) = curves.windows(rows, 100)
    assert (first, last, first2, last2) == (1, 100, 101, 125)
    assert abs(means["diffusion"] - 0.0625) < 1e-9 and means["leffa"] == 0.5 and means["steps_per_s"] == 2.0
    assert abs(means2["diffusion"] - 0.125) < 1e-9
