"""The tiny from-scratch base folder: written in the diffusers layout and accepted by `leffa train --init base`."""

from __future__ import annotations

import json

import pytest
import torch

from leffa.synth.base import make_base_folder
from leffa.synth.dataset import generate_dataset


def test_base_folder_is_what_the_trainer_starts_from(tmp_path):
    from leffa.train.config import TrainConfig
    from leffa.train.loop import initialise_model

    data = tmp_path / "data"
    generate_dataset("vton", data, 3, (32, 32), seed=0)
    stats = make_base_folder(tmp_path / "base", data, size=(32, 32), steps=2, seed=0)
    assert stats["images"] == 6 and stats["scaling_factor"] > 0
    vae_config = json.loads((tmp_path / "base" / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == stats["scaling_factor"]

    config = TrainConfig(task="vton", base=str(tmp_path / "base"), init="base", size=(32, 32), mixed_precision="no")
    model = initialise_model(config)
    assert model.latent_downscale == 4 and model.config.extra["image_size"] == [32, 32]
    assert torch.equal(  # both UNets start from the same base weights; extra input channels start at zero
        model.generative_unet.down_blocks[0].resnets[0].conv1.weight,
        model.reference_unet.down_blocks[0].resnets[0].conv1.weight,
    )
    assert float(model.generative_unet.conv_in.weight[:, 9:].abs().sum()) == 0
    latents = model.encode(torch.zeros(1, 3, 32, 32), sample=False)
    assert latents.shape == (1, 4, 8, 8)


def test_base_widths_and_a_deterministic_autoencoder(tmp_path):
    """--unet-channels / --vae-channels set the widths; the VAE's posterior variance is pinned, so the trainer's
    posterior samples are the mode."""
    from leffa.errors import LeffaError
    from leffa.synth.base import unet_config
    from leffa.train.config import TrainConfig
    from leffa.train.loop import initialise_model

    data = tmp_path / "data"
    generate_dataset("vton", data, 2, (32, 32), seed=0)
    make_base_folder(
        tmp_path / "base", data, size=(32, 32), steps=2, seed=0, unet_channels=[16, 16, 32, 32], vae_channels=[8, 16]
    )
    config = TrainConfig(task="vton", base=str(tmp_path / "base"), init="base", size=(32, 32), mixed_precision="no")
    model = initialise_model(config)
    assert model.latent_downscale == 2 and list(model.vae.config.block_out_channels) == [8, 16]
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    sampled = model.encode(images, torch.Generator().manual_seed(1))
    assert torch.allclose(sampled, model.encode(images, sample=False), atol=1e-5)
    with pytest.raises(LeffaError, match="--unet-channels"):
        unet_config([16, 16, 32])


def test_attention_levels_choose_where_the_leffa_layers_are(tmp_path):
    """--unet-attention 2,3 drops the full-latent-resolution attention; the Leffa layers follow the levels kept."""
    from leffa.errors import LeffaError
    from leffa.model import LeffaConfig, LeffaModel
    from leffa.synth.base import SCHEDULER_CONFIG, unet_config, vae_config

    config = unet_config([16, 16, 32, 32], [2, 3])
    assert config["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert config["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    model = LeffaModel(LeffaConfig(unet=config, vae=vae_config([8, 16]), scheduler=SCHEDULER_CONFIG))
    scales = model.layer_downscale()
    assert set(scales.values()) == {4, 8, 16}  # levels 2, 3 and the middle block; nothing at 1/2
    assert all(not name.startswith(("down_blocks.0.", "up_blocks.3.")) for name in scales)
    with pytest.raises(LeffaError, match="--unet-attention 0,5"):
        unet_config(None, [0, 5])


def test_grow_adds_attention_levels_without_changing_what_the_model_computes(tmp_path):
    """`leffa train --grow`: a model trained with attention at levels 2, 3 loads into --base's architecture with
    attention at level 1 too (--vae-from keeps the autoencoder, --unet-heads sets its heads); the new blocks start as
    the identity, so the grown model predicts the same noise, and their queries and keys are trainable."""
    from leffa.checkpoint import save_model
    from leffa.errors import LeffaError
    from leffa.synth.base import unet_config
    from leffa.train.config import TrainConfig, resolve_config
    from leffa.train.loop import initialise_model
    from leffa.weights import resolve_model

    data = tmp_path / "data"
    generate_dataset("vton", data, 2, (32, 32), seed=0)
    small, large = tmp_path / "small", tmp_path / "large"
    make_base_folder(small, data, size=(32, 32), steps=2, unet_channels=[16, 16, 32, 32], attention_levels=[2, 3])
    make_base_folder(
        large, data, unet_channels=[16, 16, 32, 32], attention_levels=[1, 2, 3], heads=[1, 4, 4, 4], vae_from=small
    )
    assert (large / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        small / "vae" / "diffusion_pytorch_model.safetensors"
    ).read_bytes()
    trained = initialise_model(TrainConfig(base=str(small), init="base", size=(32, 32), mixed_precision="no"))
    with torch.no_grad():  # a "trained" model: every weight moved off its initialisation
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    save_model(trained, tmp_path / "trained.safetensors")
    trained = resolve_model(str(tmp_path / "trained.safetensors")).model  # as saved

    grown = initialise_model(
        TrainConfig(base=str(large), init=str(tmp_path / "trained.safetensors"), grow=True, size=(32, 32))
    )
    assert len(grown.layer_downscale()) > len(trained.layer_downscale())
    assert grown.generative_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.heads == 1
    latents = torch.randn(1, trained.generative_unet.config.in_channels, 16, 16)
    reference = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        expected = trained.predict_noise(latents, 300, trained.reference_features(reference, 300))
        actual = grown.predict_noise(latents, 300, grown.reference_features(reference, 300))
    assert torch.allclose(actual, expected, atol=1e-5)
    new_block = grown.generative_unet.down_blocks[0].attentions[0]
    assert float(new_block.proj_out.weight.abs().sum()) == 0
    assert float(new_block.transformer_blocks[0].attn1.to_q.weight.abs().sum()) > 0

    with pytest.raises(LeffaError, match="grow needs init CHECKPOINT"):  # refused with the settings, before any work
        resolve_config({"base": str(large), "init": "base", "grow": True})
    save_model(grown, tmp_path / "grown.safetensors")
    with pytest.raises(LeffaError, match="cannot grow"):  # the other way round: the checkpoint has more than the base
        initialise_model(TrainConfig(base=str(small), init=str(tmp_path / "grown.safetensors"), grow=True))
    with pytest.raises(LeffaError, match="--unet-heads 3,4,4,4"):
        unet_config([16, 16, 32, 32], [1, 2, 3], [3, 4, 4, 4])
