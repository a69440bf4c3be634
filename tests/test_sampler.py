"""Sampler behaviour on the tiny model: seeding, guidance semantics, batching, schedulers, reference acceleration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leffa.errors import LeffaError
from leffa.runtime import place_model
from leffa.sampler import (
    SCHEDULERS,
    SamplerOptions,
    UncondFeatureCache,
    guide,
    guided_noise,
    make_scheduler,
    reference_step_features,
    sample,
)

H, W = 64, 48
# Not imported from conftest: importing it as a module would run its torch.set_num_threads(2) again.
TINY_SD15 = Path(__file__).parent / "fixtures" / "upstream_parity" / "stable-diffusion-inpainting"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny-model ops are too small to gain from threads, and spinning threads on a busy machine cost 20x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model():
    from leffa.model import LeffaModel

    torch.manual_seed(0)
    return LeffaModel.from_base_folder(TINY_SD15).eval()


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(7)
    person = torch.rand(2, 3, H, W, generator=generator) * 2 - 1
    garment = torch.rand(2, 3, H, W, generator=generator) * 2 - 1
    densepose = torch.rand(2, 3, H, W, generator=generator) * 2 - 1
    mask = torch.zeros(2, 1, H, W)
    mask[:, :, 16:48, 8:40] = 1
    return person, garment, mask, densepose


def first(inputs):
    return tuple(x[:1] for x in inputs)


FAST = SamplerOptions(steps=2)


def test_same_seed_same_image_different_seed_different(model, inputs):
    a = sample(model, *first(inputs), FAST, seed=3)
    b = sample(model, *first(inputs), FAST, seed=3)
    c = sample(model, *first(inputs), FAST, seed=4)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_image_does_not_depend_on_its_batch(model, inputs):
    """Per-image generators: the first image of a batch of two equals that image sampled alone."""
    alone = sample(model, *first(inputs), FAST, seed=5)
    together = sample(model, *inputs, FAST, seed=5)
    torch.testing.assert_close(together[:1], alone, atol=2e-5, rtol=0)


def _upstream_guidance(uncond: np.ndarray, cond: np.ndarray, scale: float) -> np.ndarray:
    """Independent restatement: CFG, then diffusers' rescale_noise_cfg with guidance_rescale = scale."""
    guided = uncond + scale * (cond - uncond)
    out = np.empty_like(guided)
    for i in range(guided.shape[0]):
        std_cond = cond[i].std(ddof=1)
        std_guided = guided[i].std(ddof=1)
        out[i] = scale * (guided[i] * std_cond / std_guided) + (1 - scale) * guided[i]
    return out


@pytest.mark.parametrize("scale", [0.5, 2.5, 7.0])
def test_guide_matches_upstream_formula(scale):
    generator = torch.Generator().manual_seed(0)
    uncond, cond = torch.randn(2, 3, 4, 8, 6, generator=generator, dtype=torch.float64)
    ours = guide(uncond, cond, scale, "upstream").numpy()
    np.testing.assert_allclose(ours, _upstream_guidance(uncond.numpy(), cond.numpy(), scale), rtol=1e-12)
    plain = guide(uncond, cond, scale, "plain").numpy()
    np.testing.assert_allclose(plain, (uncond + scale * (cond - uncond)).numpy(), rtol=1e-12)
    assert np.abs(ours - plain).max() > 1e-3  # the rescale really changes the result


def _step_input(model, inputs):
    person, garment, mask, densepose = inputs
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        masked = model.encode(person * (mask < 0.5), sample=False)
        reference = model.encode(garment, sample=False)
        noisy = torch.randn(masked.shape, generator=generator)
        return model.generative_input(noisy, mask, masked, densepose), reference


@torch.no_grad()
def test_step_matches_upstream_batched_zero_reference(model, inputs):
    """Our step (shared batch-1 zero features) equals upstream's: batch [zeros; ref] 2B, uncond first, rescale."""
    model_input, reference = _step_input(model, inputs)
    t = torch.tensor(601)
    features = model.reference_features(torch.cat([torch.zeros_like(reference), reference]), t)
    noise = model.predict_noise(torch.cat([model_input, model_input]), t, features)
    uncond, cond = noise.chunk(2)
    expected = _upstream_guidance(uncond.double().numpy(), cond.double().numpy(), 2.5)

    uncond_features, cond_features = reference_step_features(model, reference, t, guided=True, share_uncond=True)
    assert all(v.shape[0] == 1 for v in uncond_features.values())
    ours = guided_noise(model, model_input, t, uncond_features, cond_features, SamplerOptions(guidance=2.5))
    np.testing.assert_allclose(ours.double().numpy(), expected, atol=2e-5)


@torch.no_grad()
def test_cfg_batched_equals_two_passes(model, inputs):
    model_input, reference = _step_input(model, inputs)
    t = torch.tensor(301)
    uncond, cond = reference_step_features(model, reference, t, guided=True)
    options = SamplerOptions(guidance=3.0)
    batched = guided_noise(model, model_input, t, uncond, cond, options, batched=True)
    separate = guided_noise(model, model_input, t, uncond, cond, options, batched=False)
    torch.testing.assert_close(batched, separate, atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs(model, inputs, name):
    images = sample(model, *first(inputs), SamplerOptions(steps=2, scheduler=name), seed=0)
    assert images.shape == (1, 3, H, W)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_scheduler_from_base_config_keeps_schedule(model):
    scheduler = make_scheduler("ddim", model.config.scheduler)
    assert scheduler.config.beta_schedule == model.config.scheduler["beta_schedule"]
    with pytest.raises(LeffaError, match="scheduler 'heun': unknown"):
        make_scheduler("heun", model.config.scheduler)


def _count_reference_calls(model):
    calls = []
    handle = model.reference_unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls, handle


def test_reference_acceleration_runs_reference_unet_once(model, inputs):
    calls, handle = _count_reference_calls(model)
    try:
        fast = sample(model, *first(inputs), SamplerOptions(steps=3, reference_once=True), seed=0)
        assert calls == [2]  # zeros (batch 1) and the reference together, once
        calls.clear()
        exact = sample(model, *first(inputs), SamplerOptions(steps=3), seed=0)
        assert len(calls) == 3
    finally:
        handle.remove()
    assert (fast - exact).abs().max() > 0  # it is an approximation


def test_uncond_cache_skips_zero_branch_and_changes_nothing(model, inputs):
    cache = UncondFeatureCache()
    calls, handle = _count_reference_calls(model)
    try:
        first_run = sample(model, *first(inputs), FAST, seed=0, cache=cache)
        second_run = sample(model, *first(inputs), FAST, seed=0, cache=cache)
    finally:
        handle.remove()
    # the first image runs the zeros (batch 1) and the reference apart, the second the reference alone
    assert calls == [1, 1, 1, 1, 1, 1]
    assert len(cache) == 2
    assert torch.equal(first_run, second_run)  # the reference ran at the same batch both times: identical


def test_guidance_one_skips_uncond_branch(model, inputs):
    calls, handle = _count_reference_calls(model)
    try:
        sample(model, *first(inputs), SamplerOptions(steps=2, guidance=1.0), seed=0)
    finally:
        handle.remove()
    assert calls == [1, 1]


def test_intermediates_callback_sees_every_step(model, inputs):
    seen = []
    sample(
        model,
        *first(inputs),
        SamplerOptions(steps=3, scheduler="dpm++"),
        seed=0,
        on_step=lambda index, t, clean: seen.append((index, tuple(clean.shape))),
    )
    assert [index for index, _ in seen] == [0, 1, 2]
    assert seen[0][1] == (1, 4, H // 8, W // 8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_cpu(inputs, dtype):
    from leffa.model import LeffaModel

    torch.manual_seed(0)
    half = place_model(LeffaModel.from_base_folder(TINY_SD15), torch.device("cpu"), dtype, channels_last=True)
    assert half.generative_unet.conv_in.weight.dtype == dtype
    if dtype == torch.float16:
        assert half.vae.dtype == torch.float32  # force_upcast VAE stays fp32
    images = sample(half, *first(inputs), SamplerOptions(steps=1), seed=0)
    assert torch.isfinite(images).all()


def test_bad_options_are_one_line_errors():
    with pytest.raises(LeffaError, match="steps: 0"):
        SamplerOptions(steps=0).check()
    with pytest.raises(LeffaError, match="guidance_mode: unknown"):
        SamplerOptions(guidance_mode="fancy").check()
