"""Two processes on CPU (DDP over gloo) through ``accelerate launch``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_train import ROOT, TINY_ARGS, vitonhd  # noqa: F401 - vitonhd is a fixture


@pytest.mark.slow
def test_two_process_cpu_run(vitonhd, tmp_path):
    """``accelerate launch --num_processes 2`` on CPU (DDP over gloo) trains a few steps with the Leffa loss.

    accelerate's ``--cpu`` flag runs several processes only through MPI; ``--multi_gpu`` uses torchrun, which on a
    machine without CUDA (or with ACCELERATE_USE_CPU=1) gives a gloo process group on CPU.
    """
    output = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "leffa_cli.app",
        "train",
        "--task",
        "vton",
        "--stage",
        "3",
        "--data",
        str(vitonhd),
        "--output",
        str(output),
        "--max-steps",
        "2",
        "--checkpoint-every",
        "2",
        *TINY_ARGS,
    ]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es), micro-batch 1 x accumulation 1" in run.stderr
    assert (output / "model.safetensors").is_file()
    checkpoint = output / "checkpoints" / "step-00000002"
    assert (checkpoint / "noise_generator_0.safetensors").is_file()
    assert (checkpoint / "noise_generator_1.safetensors").is_file()
