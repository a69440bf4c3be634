"""``leffa train`` end to end on tiny data: CLI, stage 3 with EMA, pose task, settings. Shared helpers for test_train_*.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_data import make_deepfashion, make_vitonhd
from typer.testing import CliRunner

from leffa.checkpoint import load_model, read_config
from leffa.errors import LeffaError
from leffa.train.config import load_config
from leffa.train.loop import adapt_conv_in, train
from leffa_cli.app import build_app

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = ROOT / "tests" / "fixtures" / "upstream_parity" / "stable-diffusion-inpainting"
TINY_ARGS = [
    "--base",
    str(TINY_BASE),
    "--init",
    "random",
    "--size",
    "64x48",
    "--batch-size",
    "2",
    "--mixed-precision",
    "no",
    "--no-gradient-checkpointing",
    "--num-workers",
    "0",
    "--validate-every",
    "0",
]


@pytest.fixture(scope="module")
def vitonhd(tmp_path_factory) -> Path:
    return make_vitonhd(tmp_path_factory.mktemp("data") / "vitonhd", count=4)


def tiny_config(data: Path, output: Path, **overrides):
    values = dict(
        task="vton",
        stage=3,
        data=data,
        output=output,
        base=str(TINY_BASE),
        init="random",
        size="64x48",
        batch_size=2,
        mixed_precision="no",
        gradient_checkpointing=False,
        num_workers=0,
        validate_every=0,
        save_dtype="fp32",
    )
    values.update(overrides)
    return load_config(**values)


def test_cli_stage3_trains_and_writes_a_model(vitonhd, tmp_path):
    output = tmp_path / "run"
    result = CliRunner().invoke(
        build_app(),
        [
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
            "1",
            "--ema",
            "--lr",
            "1e-2",
            *TINY_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    model_path = output / "model.safetensors"
    config = read_config(model_path)
    assert config.extra["image_size"] == [64, 48] and config.task == "vton" and config.extra["stage"] == 3
    model = load_model(model_path)
    assert model.generative_unet.conv_in.in_channels == 12
    saved = json.loads((output / "config.json").read_text())
    assert saved["leffa_loss"] is True and saved["max_steps"] == 1
    assert (output / "checkpoints" / "latest").read_text().strip() == "step-00000001"
    assert not list((output / "checkpoints").glob(".*partial"))
    assert (output / "checkpoints" / "step-00000001" / "ema.safetensors").is_file()
    raw = load_file(str(output / "checkpoints" / "step-00000001" / "model.safetensors"))
    raw_weight = raw["model.generative_unet.conv_in.weight"].to(model.dtype)
    assert not torch.allclose(model.generative_unet.conv_in.weight, raw_weight)  # the saved model is the EMA


def test_pose_task_trains_on_deepfashion_with_the_sdxl_style_base(tmp_path):
    data = make_deepfashion(tmp_path / "deepfashion", count=2)
    base = ROOT / "tests" / "fixtures" / "upstream_parity" / "stable-diffusion-xl-1.0-inpainting-0.1"
    config = tiny_config(
        data,
        tmp_path / "pose",
        task="pose",
        base=str(base),
        max_steps=1,
        leffa_weight=1.0,
        leffa_timestep_threshold=1000,
        reference_dropout=0.0,
    )
    result = train(config)
    assert result.history[0]["leffa"] > 0
    saved = read_config(result.model_path)
    assert saved.task == "pose" and saved.unet["addition_embed_type"] == "text_time"  # base config kept as is


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


def test_init_takes_any_model_spec_through_the_one_resolver(tmp_path):
    from leffa.train.loop import initialise_model
    from leffa.weights import resolve_model

    model = initialise_model(tiny_config(tmp_path / "data", tmp_path / "run", init="synth-tiny"))
    packaged = resolve_model("synth-tiny").model.state_dict()
    assert all(torch.equal(value, packaged[key]) for key, value in model.state_dict().items())
    with pytest.raises(LeffaError, match="--init: 'no-such-model' is not a known model"):
        initialise_model(tiny_config(tmp_path / "data", tmp_path / "run", init="no-such-model"))
    with pytest.raises(LeffaError, match="init checkpoint not found"):
        initialise_model(tiny_config(tmp_path / "data", tmp_path / "run", init=str(tmp_path / "stage2.safetensors")))


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_scheduler_decays_to_zero_at_max_steps_or_stays_constant(vitonhd, tmp_path, schedule):
    config = tiny_config(vitonhd, tmp_path / schedule, max_steps=4, lr=1e-3, warmup_steps=1, lr_scheduler=schedule)
    rates = [entry["lr"] for entry in train(config).history]
    assert len(rates) == 4
    # the logged rate is the one each step used: diffusers' warm-up starts at 0, then the full rate at step 2
    assert rates[0] == 0 and rates[1] == pytest.approx(1e-3)
    if schedule == "constant":
        assert rates[2:] == pytest.approx([1e-3] * 2)
    else:  # then falling every step, towards 0 after the last
        assert rates[1] > rates[2] > rates[3] > 0


def test_unpaired_truth_trains_on_both_pairings_and_needs_the_rendered_truth(vitonhd, tmp_path):
    """--unpaired-truth: the run's dataset is the paired samples plus each person in the other garment; a dataset
    without that ground truth is a one-line error naming the split folder."""
    from leffa.errors import LeffaError
    from leffa.synth.dataset import generate_dataset
    from leffa.train.loop import Trainer

    data = tmp_path / "synth"
    generate_dataset("vton", data, 4, (64, 48), seed=0, unpaired=True)
    trainer = Trainer(tiny_config(data, tmp_path / "run", max_steps=1, unpaired_truth=True))
    assert len(trainer.dataset) == 8 and trainer.dataset.entries[4] == ("000000.jpg", "000001.jpg", "000000__000001")
    result = trainer.run()
    assert len(result.history) == 1 and (tmp_path / "run" / "model.safetensors").is_file()
    with pytest.raises(LeffaError, match=r"vitonhd/train: no unpaired ground truth"):
        Trainer(tiny_config(vitonhd, tmp_path / "other", max_steps=1, unpaired_truth=True))
    assert not (tmp_path / "other").exists()  # refused before the run folder was claimed


def test_cached_latents_train_as_encoding_every_step_does(vitonhd, tmp_path):
    """--cache-latents: each sample is encoded once (4 samples, batch 2: the second epoch reads the cache), the
    latents drawn from the kept posteriors use the generator as encoding does, so the run's losses and weights match
    an uncached run's; with augmentation on it is refused, naming the settings."""
    from leffa.train.loop import Trainer

    runs = {}
    for cached in (False, True):
        config = tiny_config(
            vitonhd,
            tmp_path / f"cached-{cached}",
            max_steps=4,
            flip_probability=0,
            affine_strength=0,
            cache_latents=cached,
            ema=False,
        )
        trainer = Trainer(config)
        runs[cached] = (trainer.run(), trainer.latent_cache)
    (plain, none), (cached, cache) = runs[False], runs[True]
    assert none is None and len(cache) == 4
    assert [h["loss"] for h in cached.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-4)
    plain_weights, cached_weights = load_file(plain.model_path), load_file(cached.model_path)
    assert all(torch.allclose(plain_weights[k], cached_weights[k], atol=1e-5) for k in plain_weights)
    with pytest.raises(LeffaError, match="cache_latents: needs flip_probability 0 and affine_strength 0") as caught:
        tiny_config(vitonhd, tmp_path / "augmented", cache_latents=True)
    assert caught.value.option == "cache_latents"


def test_snr_gamma_weights_each_samples_diffusion_error_in_the_trainers_step(vitonhd, tmp_path):
    """--snr-gamma: the trainer's step scales each sample's squared error by its Min-SNR weight; unset, the plain
    mean (the paper's loss)."""
    from leffa.loss import min_snr_weight
    from leffa.train.loop import Trainer, compute_losses, prepare_inputs, release_features

    trainer = Trainer(tiny_config(vitonhd, tmp_path / "run", max_steps=1, snr_gamma=5.0, reference_dropout=0.0))
    batch = next(trainer._batches())
    losses, seed = {}, 13
    for gamma in (None, 5.0):
        inputs = prepare_inputs(
            trainer.model, trainer.scheduler, batch, torch.Generator().manual_seed(seed), 0.0, snr_gamma=gamma
        )
        with torch.no_grad():
            _, losses[gamma], _, _ = compute_losses(trainer.forward, inputs, batch, None)
        release_features(trainer.model)
        if gamma is None:
            assert inputs.loss_weight is None
        else:
            weight = min_snr_weight(trainer.scheduler, inputs.timesteps, gamma)
            torch.testing.assert_close(inputs.loss_weight, weight)
            assert (weight < 1).any()  # a nearly clean timestep drawn (seed chosen for it)
    assert not torch.allclose(losses[None], losses[5.0])  # the same noise and timesteps, weighted differently
