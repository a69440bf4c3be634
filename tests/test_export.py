"""`leffa export --onnx` on the tiny model: graphs load in onnxruntime (CPU) and match torch; safetensors conversion."""

from __future__ import annotations

import json
import re

import onnx
import onnxruntime
import pytest
import torch
from conftest import PARITY, TINY_SD15
from typer.testing import CliRunner

from leffa.attention import GenerativeSelfAttention, ReferenceSelfAttention, VaeSelfAttention
from leffa.checkpoint import load_model, read_config
from leffa.errors import LeffaError
from leffa.export.graphs import (
    GRAPHS,
    ExportOptions,
    check_export,
    chunked_attention,
    chunks_needed,
    convert_to_safetensors,
    export_model_copy,
    export_onnx,
)
from leffa.model import LeffaModel
from leffa_cli.app import build_app
from leffa_cli.fields import flag

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """One dynamic-size fp32 export of the seeded tiny model through the CLI, with --check."""
    directory = tmp_path_factory.mktemp("onnx")
    result = runner.invoke(
        build_app(),
        [
            "export",
            "--onnx",
            str(directory),
            "--random-init",
            "--base",
            str(TINY_SD15),
            "--seed",
            "0",
            "--check",
            "--max-height",
            "128",
            "--max-width",
            "96",
        ],
    )
    assert result.exit_code == 0, result.output
    torch.manual_seed(0)
    return directory, LeffaModel.from_base_folder(TINY_SD15).eval(), result.output


def test_cli_writes_four_graphs_and_manifest(cli_export):
    directory, model, _ = cli_export
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["graphs"]) == set(GRAPHS)
    assert manifest["layer_names"] == model.layer_names
    assert manifest["leffa_config"]["unet"] == model.config.unet
    generative = manifest["graphs"]["generative_unet"]
    assert [v["name"] for v in generative["inputs"]] == ["sample", "timestep", *model.layer_names]
    assert [v["name"] for v in manifest["graphs"]["vae_encoder"]["outputs"]] == ["mean", "logvar"]
    # Small folder, so no external data; every graph is a valid ONNX model.
    for name in GRAPHS:
        onnx.checker.check_model(str(directory / f"{name}.onnx"))
        assert not manifest["graphs"][name]["external_data"]


def test_cli_check_reports_small_differences(cli_export):
    _, _, output = cli_export
    for name in GRAPHS:
        match = re.search(rf"{name}\s*│\s*([0-9.e+-]+)", output)
        assert match, output
        assert float(match.group(1)) <= 1e-4


def test_graphs_match_torch_at_another_size_and_batch(cli_export):
    directory, model, _ = cli_export
    # Traced at 128x128; run at 192x64 with batch 3: the sizes really are dynamic.
    diffs = check_export(model, directory, batch=3, height=192, width=64, providers=["CPUExecutionProvider"])
    assert set(diffs) == set(GRAPHS)
    assert max(diffs.values()) <= 1e-4, diffs


def test_graphs_load_in_onnxruntime_cpu(cli_export):
    directory, _, _ = cli_export
    session = onnxruntime.InferenceSession(str(directory / "vae_decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["latent"]
    assert session.get_inputs()[0].shape == ["batch", 4, "latent_height", "latent_width"]


def test_chunked_attention_equals_sdpa_for_uneven_chunks():
    q, k, v = torch.randn(2, 3, 37, 8), torch.randn(2, 3, 74, 8), torch.randn(2, 3, 74, 8)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for chunks in (1, 2, 5, 36):
        torch.testing.assert_close(chunked_attention(q, k, v, chunks), expected, atol=1e-6, rtol=1e-5)


def test_chunked_export_copy_keeps_the_model_processors_and_swaps_only_the_kernel(tiny_model):
    options = ExportOptions(max_height=64, max_width=64, max_score_elements=4096)
    copy, chunks = export_model_copy(tiny_model, options)
    assert max(chunks.values()) > 1  # the budget forces real chunking
    for unet, cls in ((copy.reference_unet, ReferenceSelfAttention), (copy.generative_unet, GenerativeSelfAttention)):
        processors = list(unet.attn_processors.values())
        assert processors and all(type(p) is cls and p.kernel.func is chunked_attention for p in processors)
    assert all(type(p) is VaeSelfAttention for p in copy.vae.attn_processors.values())
    assert all(
        p.kernel is torch.nn.functional.scaled_dot_product_attention
        for p in tiny_model.generative_unet.attn_processors.values()
    )  # the original is untouched
    torch.manual_seed(0)
    latent, sample, t = torch.randn(1, 4, 8, 8), torch.randn(1, 12, 8, 8), torch.tensor([500.0])
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        features = tiny_model.reference_features(latent, t)
        chunked_features = copy.reference_features(latent, t)
        for name in tiny_model.layer_names:
            torch.testing.assert_close(chunked_features[name], features[name], atol=1e-5, rtol=1e-4)
        noise = tiny_model.predict_noise(sample, t, features)
        torch.testing.assert_close(copy.predict_noise(sample, t, features), noise, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(copy.decode(latent), tiny_model.decode(latent), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            copy.encode(images, sample=False), tiny_model.encode(images, sample=False), atol=1e-5, rtol=1e-4
        )


def test_chunk_count_keeps_each_chunk_under_budget():
    # 1/8 layer at 1024x768 with CFG: 2 x 8 x 12288 x 24576 = 4.8e9 elements unchunked.
    chunks = chunks_needed(2, 8, 12288, 24576, 2**30)
    assert 2 * 8 * -(-12288 // chunks) * 24576 <= 2**30 < 2 * 8 * -(-12288 // (chunks - 1)) * 24576
    with pytest.raises(LeffaError, match="lower max_batch"):
        chunks_needed(10**6, 8, 10, 10**6, 2**30)


def test_fixed_size_fp16_reference_graph(tmp_path, tiny_model):
    options = ExportOptions(dtype="fp16", height=128, width=96)
    manifest = export_onnx(tiny_model, tmp_path, options, graphs=("reference_unet",))
    assert manifest["unet_dtype"] == "float16"
    latent = manifest["graphs"]["reference_unet"]["inputs"][0]
    assert latent == {"name": "latent", "dtype": "float16", "shape": ["batch", 4, 16, 12]}
    diffs = check_export(tiny_model, tmp_path, batch=2, providers=["CPUExecutionProvider"])
    assert diffs["reference_unet"] < 2e-2  # fp16 graph vs fp16 torch on CPU


def test_bad_options_are_one_line_errors(tmp_path, tiny_model):
    with pytest.raises(LeffaError, match="height and width: give both") as caught:
        export_onnx(tiny_model, tmp_path, ExportOptions(height=128))
    assert caught.value.options == ("height", "width")
    assert caught.value.worded(flag).startswith("--height and --width: give both to fix the image size")
    with pytest.raises(LeffaError, match="dtype 'int8'") as caught:
        export_onnx(tiny_model, tmp_path, ExportOptions(dtype="int8"))
    assert caught.value.option == "dtype"
    with pytest.raises(LeffaError, match="multiple of 8"):
        export_onnx(tiny_model, tmp_path, ExportOptions(height=100, width=96))
    result = runner.invoke(build_app(), ["export", "--onnx", str(tmp_path)])
    assert result.exit_code != 0 and "--model" in str(result.exception)


def test_safetensors_conversion_matches_load_model(tmp_path):
    source = PARITY / "sd15_seed0.pth"
    out = tmp_path / "tiny.safetensors"
    result = runner.invoke(
        build_app(), ["export", "--safetensors", str(source), "--base", str(TINY_SD15), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert read_config(out) is not None
    converted = load_model(out)
    upstream = load_model(source, base=TINY_SD15)
    assert converted.dtype == torch.float32  # loads into an fp32 model; the file holds fp16
    for key, value in upstream.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[key], value.half().float(), atol=0, rtol=0)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata()["dtype"] == "fp16"
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}  # noqa: SIM118 - safe_open is not a dict


def test_safetensors_conversion_refuses_wrong_base(tmp_path):
    with pytest.raises(LeffaError, match="does not match the model config"):
        convert_to_safetensors(
            PARITY / "sd15_seed0.pth", PARITY / "stable-diffusion-xl-1.0-inpainting-0.1", tmp_path / "x.safetensors"
        )
    with pytest.raises(LeffaError, match=r"\.safetensors"):
        convert_to_safetensors(PARITY / "sd15_seed0.pth", TINY_SD15, tmp_path / "x.pth")


def test_large_graphs_get_one_external_data_file(tmp_path, tiny_model, monkeypatch):
    import leffa.export.graphs

    monkeypatch.setattr(leffa.export.graphs, "EXTERNAL_DATA_BYTES", 1)  # pretend the tiny decoder is over 2 GB
    manifest = export_onnx(tiny_model, tmp_path, ExportOptions(height=64, width=48), graphs=("vae_decoder",))
    info = manifest["graphs"]["vae_decoder"]
    assert info["external_data"] and info["files"] == ["vae_decoder.onnx", "vae_decoder.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "vae_decoder.onnx", "vae_decoder.onnx.data"]
    diffs = check_export(tiny_model, tmp_path, providers=["CPUExecutionProvider"])
    assert diffs["vae_decoder"] <= 1e-4
