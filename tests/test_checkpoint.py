"""Checkpoint loading and saving: safetensors round trip, upstream pickles, clear errors."""

import json
import shutil

import pytest
import torch
from conftest import PARITY, TINY_SD15, TINY_SDXL

from leffa.checkpoint import load_model, read_config, save_model
from leffa.errors import LeffaError


def test_safetensors_round_trip_is_self_describing(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "tiny.safetensors", dtype="fp32")
    assert read_config(path) == tiny_model.config
    loaded = load_model(path)  # no base folder needed
    for (key, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), key
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_save_halves_the_file(tmp_path, tiny_model, dtype, torch_dtype):
    full = save_model(tiny_model, tmp_path / "full.safetensors", dtype="fp32").stat().st_size
    half_path = save_model(tiny_model, tmp_path / f"{dtype}.safetensors", dtype=dtype)
    assert half_path.stat().st_size < 0.55 * full
    from safetensors import safe_open

    with safe_open(str(half_path), framework="pt") as handle:
        assert handle.get_tensor(next(iter(handle.keys()))).dtype == torch_dtype


def test_upstream_fp16_pickle_converts_to_safetensors(tmp_path):
    model = load_model(PARITY / "sdxl_seed0.pth", base=TINY_SDXL)
    path = save_model(model, tmp_path / "converted.safetensors", dtype="fp16")
    again = load_model(path)
    io = torch.load(PARITY / "sdxl_seed0_io.pt", weights_only=True)
    with torch.no_grad():
        a = model.float().reference_features(io["ref_latent"], io["timesteps"])
        b = again.float().reference_features(io["ref_latent"], io["timesteps"])
    for name in a:
        assert torch.equal(a[name], b[name])  # fp16 weights round-trip exactly


def test_missing_checkpoint(tmp_path):
    with pytest.raises(LeffaError, match="not found"):
        load_model(tmp_path / "nope.pth", base=TINY_SD15)


def test_truncated_checkpoint(tmp_path):
    data = (PARITY / "sd15_seed0.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LeffaError, match="truncated.pth: not a readable checkpoint"):
        load_model(path, base=TINY_SD15)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(LeffaError, match="not a readable checkpoint"):
        load_model(path, base=TINY_SD15)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(LeffaError, match="not a readable safetensors"):
        load_model(bad, base=TINY_SD15)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(LeffaError, match="evil.pth"):
        load_model(path, base=TINY_SD15)


def test_checkpoint_for_another_base_names_keys(tmp_path):
    with pytest.raises(LeffaError, match=r"does not match the model config: .*(missing|unexpected|shape)") as info:
        load_model(PARITY / "sdxl_seed0.pth", base=TINY_SD15)
    assert "first:" in str(info.value)


def test_shape_mismatch_is_named(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(TINY_SD15, base)
    config = json.loads((base / "unet" / "config.json").read_text())
    config["block_out_channels"] = [16, 16, 32, 64]
    (base / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LeffaError, match=r"shape mismatches \(first: .* is \("):
        load_model(PARITY / "sd15_seed0.pth", base=base)


def test_missing_base_folder(tmp_path):
    with pytest.raises(LeffaError, match="base-model folder not found"):
        load_model(PARITY / "sd15_seed0.pth", base=tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    with pytest.raises(LeffaError, match="missing unet/config.json"):
        load_model(PARITY / "sd15_seed0.pth", base=tmp_path / "half")


def test_pickle_without_base_folder(tmp_path):
    with pytest.raises(LeffaError, match="give the base-model folder"):
        load_model(PARITY / "sd15_seed0.pth")
