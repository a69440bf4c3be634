"""Low-memory inference: offload hooks and attention slicing give the same pixels as the plain model."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_SD15
from PIL import Image
from test_tryon_cli import files, run, tryon_args  # noqa: F401 - ``files`` is a fixture

from leffa.attention import sliced_attention
from leffa.errors import LeffaError
from leffa.model import LeffaModel
from leffa.offload import _OffloadOthers, apply_offload
from leffa.runtime import place_model
from leffa.sampler import SamplerOptions, sample

OPTIONS = SamplerOptions(steps=2)


def _model() -> LeffaModel:
    torch.manual_seed(0)
    return LeffaModel.from_base_folder(TINY_SD15).eval()


def _inputs(height=64, width=48):
    generator = torch.Generator().manual_seed(3)
    person = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    garment = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    densepose = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    mask = torch.zeros(1, 1, height, width)
    mask[..., 16:48, 12:36] = 1
    return person, garment, mask, densepose


@pytest.fixture(scope="module")
def plain_image():
    return sample(_model(), *_inputs(), OPTIONS, seed=7)


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_gives_identical_pixels(mode, plain_image):
    model = place_model(_model(), torch.device("cpu"), torch.float32, offload=mode)
    assert model.device == torch.device("cpu")
    assert getattr(model.generative_unet, "_hf_hook", None) is not None
    if mode == "sequential":
        # the weights really live in the hooks' CPU store and are streamed in per layer
        assert model.generative_unet.conv_in.weight.device.type == "meta"
    image = sample(model, *_inputs(), OPTIONS, seed=7)
    assert torch.equal(image, plain_image)


def test_model_offload_chains_every_part_to_the_other_two():
    model = _model()
    hooks = apply_offload(model, "model", "cpu")
    parts = [model.vae, model.reference_unet, model.generative_unet]
    assert [hook.model for hook in hooks] == parts
    for hook, part in zip(hooks, parts):
        previous = hook.hook.prev_module_hook
        assert isinstance(previous, _OffloadOthers)
        assert {id(other.model) for other in previous.others} == {id(p) for p in parts if p is not part}


def test_offload_refuses_unknown_mode_and_compile():
    with pytest.raises(LeffaError, match="offload: unknown mode 'gpu'"):
        place_model(_model(), torch.device("cpu"), torch.float32, offload="gpu")
    with pytest.raises(LeffaError, match="compile cannot be combined with offload"):
        place_model(_model(), torch.device("cpu"), torch.float32, compile=True, offload="model")


def test_sliced_attention_equals_full_attention():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 50, 8, generator=generator)
    k = torch.randn(2, 3, 100, 8, generator=generator)
    v = torch.randn(2, 3, 100, 8, generator=generator)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for queries in (1, 7, 49, 50, 64, None):
        torch.testing.assert_close(sliced_attention(q, k, v, queries), full, rtol=0, atol=1e-6)


def test_attention_slice_option_gives_the_same_image(plain_image):
    model = _model()
    model.set_attention_slice(16)
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def counting(q, *args, **kwargs):
        calls.append((q.shape[1], q.shape[2]))
        return original(q, *args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        image = sample(model, *_inputs(), OPTIONS, seed=7)
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    unet_calls = [tokens for heads, tokens in calls if heads > 1]  # the VAE's one-head attention is not ours
    assert unet_calls and max(unet_calls) == 16  # 48 tokens at 1/8 arrive as three slices of 16
    torch.testing.assert_close(image, plain_image, rtol=0, atol=1e-5)
    with pytest.raises(LeffaError, match="attention_slice 0: must be at least 1"):
        model.set_attention_slice(0)


def test_cli_offload_and_attention_slice_write_the_same_png(files, tmp_path, capsys):  # noqa: F811
    code, _, _ = run(tryon_args(files, tmp_path / "plain.png"), capsys)
    assert code in (0, None)
    code, _, err = run(
        tryon_args(files, tmp_path / "low.png", "--offload", "sequential", "--attention-slice", "8"), capsys
    )
    assert code in (0, None)
    assert "on the CPU it only adds overhead" in err
    assert Image.open(tmp_path / "low.png").tobytes() == Image.open(tmp_path / "plain.png").tobytes()
    code, _, err = run(tryon_args(files, tmp_path / "bad.png", "--offload", "gpu"), capsys)
    assert code == 2 and "--offload: unknown mode 'gpu'" in err and not (tmp_path / "bad.png").exists()
