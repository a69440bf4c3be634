"""The onnxruntime backend offers the LeffaModel API and gives the torch backend's numbers and images."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_SD15
from diffusers import DDPMScheduler

from leffa.errors import LeffaError
from leffa.export.backend import OnnxLeffaModel
from leffa.export.graphs import ExportOptions, export_onnx
from leffa.model import LeffaModel

HEIGHT, WIDTH = 128, 96


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    torch.manual_seed(0)
    model = LeffaModel.from_base_folder(TINY_SD15).eval()
    directory = tmp_path_factory.mktemp("onnx_backend")
    export_onnx(model, directory, ExportOptions(height=HEIGHT, width=WIDTH))
    return model, OnnxLeffaModel(directory, providers=["CPUExecutionProvider"])


def conditions(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    person = torch.rand(1, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1
    garment = torch.rand(1, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1
    mask = (torch.rand(1, 1, HEIGHT, WIDTH, generator=generator) > 0.5).float()
    densepose = torch.rand(1, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1
    return person, garment, mask, densepose


def try_on(model, steps: int = 4, guidance: float = 2.5, seed: int = 42) -> torch.Tensor:
    """A small CFG DDPM try-on through the public model API only, as a sampler would run it."""
    person, garment, mask, densepose = conditions()
    generator = torch.Generator().manual_seed(seed)
    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        masked = model.encode(person * (mask < 0.5), generator=generator)
        reference = model.encode(garment, generator=generator)
        middle = scheduler.timesteps[len(scheduler.timesteps) // 2]
        features = model.reference_features(torch.cat([torch.zeros_like(reference), reference]), middle)
        latents = torch.randn(masked.shape, generator=generator, dtype=model.dtype)
        for t in scheduler.timesteps:
            x = model.generative_input(latents, mask, masked, densepose)
            noise = model.predict_noise(torch.cat([x, x]), t, features)
            uncond, cond = noise.chunk(2)
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, generator=generator).prev_sample
        return model.decode(latents).clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2).pow(2).mean()
    return float(10 * torch.log10(1 / mse))


def test_api_mirrors_leffa_model(backends):
    model, onnx_model = backends
    assert onnx_model.layer_names == model.layer_names
    assert onnx_model.scaling_factor == model.scaling_factor
    assert onnx_model.latent_downscale == model.latent_downscale
    assert onnx_model.layer_downscale() == model.layer_downscale()
    assert onnx_model.dtype == model.dtype and onnx_model.device == model.device
    assert onnx_model.config == model.config


def test_encode_samples_with_callers_generator(backends):
    model, onnx_model = backends
    images = conditions()[0]
    with torch.no_grad():
        expected = model.encode(images, generator=torch.Generator().manual_seed(3))
        mode = model.encode(images, sample=False)
    got = onnx_model.encode(images, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_model.encode(images, sample=False), mode, atol=1e-4, rtol=0)
    other = onnx_model.encode(images, generator=torch.Generator().manual_seed(4))
    assert (other - got).abs().max() > 1e-3  # the sample really depends on the generator


def test_unets_match_with_cfg_batch_and_scalar_timestep(backends):
    model, onnx_model = backends
    generator = torch.Generator().manual_seed(5)
    ref = torch.randn(2, 4, HEIGHT // 8, WIDTH // 8, generator=generator)
    x = torch.randn(2, 12, HEIGHT // 8, WIDTH // 8, generator=generator)
    with torch.no_grad():
        features = model.reference_features(ref, 700)
        expected = model.predict_noise(x, 700, features)
    onnx_features = onnx_model.reference_features(ref, torch.tensor(700))
    for name in model.layer_names:
        torch.testing.assert_close(onnx_features[name], features[name], atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_model.predict_noise(x, 700, onnx_features), expected, atol=1e-4, rtol=0)


def test_capture_is_refused(backends):
    _, onnx_model = backends
    with pytest.raises(LeffaError, match="use backend torch") as caught:
        onnx_model.predict_noise(torch.zeros(1, 12, 16, 12), 1, {}, capture={})
    assert caught.value.option == "backend"


def test_missing_export_folder_is_one_line_error(tmp_path):
    with pytest.raises(LeffaError, match="manifest.json"):
        OnnxLeffaModel(tmp_path)


def test_full_tiny_try_on_matches_torch_image(backends):
    model, onnx_model = backends
    torch_image = try_on(model)
    onnx_image = try_on(onnx_model)
    assert torch_image.shape == onnx_image.shape == (1, 3, HEIGHT, WIDTH)
    assert psnr(onnx_image, torch_image) > 60  # fp32: differences of ~1e-5, far below one 8-bit level
    different_seed = try_on(onnx_model, seed=7)
    assert psnr(different_seed, torch_image) < 40  # the bound is tight enough to tell images apart
