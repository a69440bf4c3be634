"""``leffa train`` end to end on tiny VITON-HD-layout data: CLI, stage-3 Leffa loss, checkpoints, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from leffa.checkpoint import load_model, read_config
from leffa.errors import LeffaError
from leffa.train import Trainer, adapt_conv_in, train
from leffa.train_config import load_config
from leffa_cli.app import build_app
from test_data import make_vitonhd

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = ROOT / "tests" / "fixtures" / "upstream_parity" / "stable-diffusion-inpainting"
TINY_ARGS = [
    "--base", str(TINY_BASE), "--init", "random", "--size", "64x48", "--batch-size", "2",
    "--mixed-precision", "no", "--no-gradient-checkpointing", "--num-workers", "0", "--validate-every", "0",
]


@pytest.fixture(scope="module")
def vitonhd(tmp_path_factory) -> Path:
    return make_vitonhd(tmp_path_factory.mktemp("data") / "vitonhd", count=4)


def tiny_config(data: Path, output: Path, **overrides):
    values = dict(
        task="vton", stage=3, data=data, output=output, base=str(TINY_BASE), init="random", size="64x48",
        batch_size=2, mixed_precision="no", gradient_checkpointing=False, num_workers=0, validate_every=0,
        save_dtype="fp32",
    )
    values.update(overrides)
    return load_config(**values)


def test_cli_stage3_trains_and_writes_a_model(vitonhd, tmp_path):
    output = tmp_path / "run"
    result = CliRunner().invoke(
        build_app(),
        ["train", "--task", "vton", "--stage", "3", "--data", str(vitonhd), "--output", str(output),
         "--max-steps", "2", "--checkpoint-every", "1", *TINY_ARGS],
    )
    assert result.exit_code == 0, result.output
    model_path = output / "model.safetensors"
    config = read_config(model_path)
    assert config.extra["image_size"] == [64, 48] and config.task == "vton" and config.extra["stage"] == 3
    model = load_model(model_path)
    assert model.generative_unet.conv_in.in_channels == 12
    saved = json.loads((output / "config.json").read_text())
    assert saved["leffa_loss"] is True and saved["max_steps"] == 2
    assert (output / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    assert not list((output / "checkpoints").glob(".*partial"))


def test_stage3_leffa_loss_is_on_and_changes_the_weights(vitonhd, tmp_path):
    config = tiny_config(vitonhd, tmp_path / "run", max_steps=2, leffa_weight=1.0, leffa_timestep_threshold=1000,
                         reference_dropout=0.0)
    trainer = Trainer(config)
    before = trainer.model.generative_unet.conv_in.weight.detach().clone()
    result = trainer.run()
    assert all(record["leffa"] > 0 for record in result.history)
    assert all(record["loss"] > record["diffusion"] for record in result.history)
    assert not torch.equal(before, trainer.model.generative_unet.conv_in.weight)
    assert result.frozen_parameters > 0  # reference-UNet tail that cannot reach the features


def test_resume_after_a_kill_continues_exactly(vitonhd, tmp_path):
    """Kill after step 2 (checkpoint 2 written), resume: step 3's loss equals an uninterrupted run's."""
    straight = train(tiny_config(vitonhd, tmp_path / "straight", max_steps=3, checkpoint_every=2))

    class Killed(Exception):
        pass

    def kill_after_two(report):
        if report.step == 2:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_config(vitonhd, tmp_path / "killed", max_steps=3, checkpoint_every=2), on_step=kill_after_two)
    resumed = train(tiny_config(vitonhd, tmp_path / "killed", max_steps=3, checkpoint_every=2, resume="latest"))
    assert resumed.resumed_from.name == "step-00000002"
    assert [r["step"] for r in resumed.history] == [3]
    assert resumed.history[0]["loss"] == pytest.approx(straight.history[2]["loss"], rel=1e-6, abs=0)
    final_a = load_model(tmp_path / "straight" / "model.safetensors").state_dict()
    final_b = load_model(tmp_path / "killed" / "model.safetensors").state_dict()
    assert all(torch.allclose(final_a[k], final_b[k], atol=1e-6) for k in final_a)


def test_config_precedence_and_errors(tmp_path, monkeypatch):
    file = tmp_path / "train.toml"
    file.write_text('lr = 3e-5\nmax_steps = 5\nsize = "128x96"\n')
    monkeypatch.setenv("LEFFA_TRAIN_MAX_STEPS", "7")
    config = load_config(file, task="pose", stage=2, seed=3)
    assert (config.lr, config.max_steps, config.size, config.seed) == (3e-5, 7, (128, 96), 3)  # env beats file
    assert config.batch_size == 64 and config.init == "runs/pose-stage1/model.safetensors"  # stage preset
    assert load_config(file, stage=1, max_steps=9).max_steps == 9  # CLI beats env
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("train:\n  ema: true\n  leffa_distance: smooth_l1\n")
    config = load_config(yaml_file, stage=3)
    assert config.ema and config.leffa_distance == "smooth_l1" and config.leffa_loss
    (tmp_path / "bad.toml").write_text("learning_rate = 1\n")
    with pytest.raises(LeffaError, match="unknown settings learning_rate"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(LeffaError, match="size"):
        load_config(size="100x75")
    assert config.accumulation(processes=4) == (16, 1)
    assert load_config(stage=3, micro_batch_size=4).accumulation(processes=2) == (4, 8)


def test_dry_run_prints_the_resolved_config():
    result = CliRunner().invoke(build_app(), ["train", "--task", "pose", "--stage", "3", "--lr", "2e-5", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "lr: 2.0e-05" in result.output and "leffa_loss: true" in result.output and "- 512" in result.output


def test_conv_in_is_widened_with_zeros_and_cut():
    weight = torch.randn(8, 9, 3, 3)
    widened = adapt_conv_in(weight, 12)
    assert torch.equal(widened[:, :9], weight) and widened[:, 9:].abs().sum() == 0
    assert torch.equal(adapt_conv_in(weight, 4), weight[:, :4])


@pytest.mark.slow
def test_two_process_cpu_run(vitonhd, tmp_path):
    """``accelerate launch --num_processes 2 --cpu`` (gloo) trains a few steps with the Leffa loss."""
    output = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "leffa_cli.app", "train", "--task", "vton",
        "--stage", "3", "--data", str(vitonhd), "--output", str(output), "--max-steps", "2",
        "--checkpoint-every", "2", *TINY_ARGS,
    ]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es), micro-batch 1 x accumulation 1" in run.stderr
    assert (output / "model.safetensors").is_file()
    checkpoint = output / "checkpoints" / "step-00000002"
    assert (checkpoint / "noise_generator_0.safetensors").is_file()
    assert (checkpoint / "noise_generator_1.safetensors").is_file()
