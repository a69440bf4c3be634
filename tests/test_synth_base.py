"""The tiny from-scratch base folder: written in the diffusers layout and accepted by `leffa train --init base`."""

from __future__ import annotations

import json

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
