"""Exported graphs stay under TensorRT's 2^31-element tensor limit at 1024x768 with CFG (batch 2).

A full-width SD1.5 export (2 x 860M weights) takes minutes and ~10 GB here, so the test exports the full-size
config with every channel width divided by a constant (UNet 320/640/1280 -> 32/64/128, VAE by 4) and everything
else unchanged: same heads, blocks, resolutions and attention layers. Then it sets the inputs to batch 2 at
1024x768 and infers every tensor's shape without weights or execution. Attention score tensors (Softmax inputs and
outputs) do not depend on channel width at all, so they are exact; every other tensor's element count is at most
linear in a width, so multiplying it by the divisor bounds its full-width size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leffa.export.graphs import TENSORRT_ELEMENT_LIMIT, ExportOptions, export_onnx, tensor_sizes
from leffa.model import LeffaConfig, LeffaModel

FULL_SIZE = Path(__file__).parent / "fixtures" / "full_size_configs" / "stable-diffusion-inpainting"
UNET_DIVISOR, VAE_DIVISOR = 10, 4
BATCH, HEIGHT, WIDTH = 2, 1024, 768


def narrow_full_size_model() -> LeffaModel:
    config = LeffaConfig.from_base_folder(FULL_SIZE)
    assert config.unet["block_out_channels"] == [320, 640, 1280, 1280]
    config.unet["block_out_channels"] = [c // UNET_DIVISOR for c in config.unet["block_out_channels"]]
    config.vae["block_out_channels"] = [c // VAE_DIVISOR for c in config.vae["block_out_channels"]]
    torch.manual_seed(0)
    return LeffaModel(config).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = narrow_full_size_model()
    directory = tmp_path_factory.mktemp("full_size_onnx")
    # Dynamic size: traced small (fast), checked at 1024x768 by shape inference.
    # The reference UNet has the same layers with half the keys; the generative graph is the one at risk, and
    # exporting both doubles this file's time. The reference chunk counts are checked without export below.
    manifest = export_onnx(model, directory, ExportOptions(), graphs=("generative_unet", "vae_decoder"))
    return model, directory, manifest


def full_size_inputs(manifest: dict, graph: str) -> dict[str, list[int]]:
    """Concrete input shapes for batch 2 at 1024x768, read from the manifest's symbolic shapes."""
    latent = {"batch": BATCH, "latent_height": HEIGHT // 8, "latent_width": WIDTH // 8}
    shapes = {}
    for value in manifest["graphs"][graph]["inputs"]:
        dims = []
        for dim in value["shape"]:
            if isinstance(dim, int):
                dims.append(dim)
            elif dim.startswith("tokens_"):
                scale = int(dim.removeprefix("tokens_"))
                dims.append((HEIGHT // scale) * (WIDTH // scale))
            else:
                dims.append(latent[dim])
        shapes[value["name"]] = dims
    return shapes


def split_sizes(sizes: dict[str, tuple[str, int]], graph_path: Path) -> tuple[int, int]:
    """(largest attention score tensor, largest other tensor) in elements."""
    import onnx

    proto = onnx.load(str(graph_path), load_external_data=False)
    scores = set()
    for node in proto.graph.node:
        if node.op_type == "Softmax":
            scores.update(node.input)
            scores.update(node.output)
    unknown = [name for name, (_, count) in sizes.items() if count < 0]
    assert not unknown, f"shape inference left {len(unknown)} tensors unsized, e.g. {unknown[:3]}"
    largest_score = max((count for name, (_, count) in sizes.items() if name in scores), default=0)
    largest_other = max(count for name, (_, count) in sizes.items() if name not in scores)
    return largest_score, largest_other


def test_reference_chunks_keep_scores_under_budget_at_1024x768(exported):
    model, _, manifest = exported
    budget = ExportOptions().max_score_elements
    for layer, downscale in model.layer_downscale().items():
        tokens = (HEIGHT // downscale) * (WIDTH // downscale)
        chunks = manifest["attention_chunks"][f"reference:{layer}"]
        heads = 8
        assert BATCH * heads * -(-tokens // chunks) * tokens <= budget


@pytest.mark.parametrize("graph", ["generative_unet"])
def test_unet_graphs_stay_under_tensorrt_limit_at_1024x768_with_cfg(exported, graph):
    model, directory, manifest = exported
    sizes = tensor_sizes(directory / f"{graph}.onnx", full_size_inputs(manifest, graph))
    largest_score, largest_other = split_sizes(sizes, directory / f"{graph}.onnx")
    # The 1/8 layers would hold 2 x 8 x 12288 x 24576 (generative) or x 12288 (reference) scores unchunked.
    tokens = (HEIGHT // 8) * (WIDTH // 8)
    keys = 2 * tokens if graph == "generative_unet" else tokens
    whole = BATCH * 8 * tokens * keys
    assert whole > TENSORRT_ELEMENT_LIMIT  # the problem is real at this size
    assert largest_score >= whole // manifest["attention_chunks"][f"{graph.split('_')[0]}:" + model.layer_names[0]]
    assert largest_score <= ExportOptions().max_score_elements < TENSORRT_ELEMENT_LIMIT
    assert largest_other * UNET_DIVISOR < TENSORRT_ELEMENT_LIMIT


def test_vae_decoder_stays_under_tensorrt_limit(exported):
    _, directory, manifest = exported
    path = directory / "vae_decoder.onnx"
    sizes = tensor_sizes(path, full_size_inputs(manifest, "vae_decoder"))
    largest_score, largest_other = split_sizes(sizes, path)
    assert largest_score == BATCH * ((HEIGHT // 8) * (WIDTH // 8)) ** 2  # one head, one chunk at batch 2
    assert largest_score < TENSORRT_ELEMENT_LIMIT
    assert largest_other * VAE_DIVISOR < TENSORRT_ELEMENT_LIMIT


def test_manifest_records_config_and_symbolic_shapes(exported):
    model, directory, manifest = exported
    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk["leffa_config"] == json.loads(model.config.to_json())
    sample = on_disk["graphs"]["generative_unet"]["inputs"][0]
    assert sample == {"name": "sample", "dtype": "float32", "shape": ["batch", 12, "latent_height", "latent_width"]}
    inputs = on_disk["graphs"]["generative_unet"]["inputs"]
    assert [value["name"] for value in inputs[2:]] == model.layer_names
    assert inputs[2]["shape"] == ["batch", "tokens_8", 32]  # 1/8 tokens, 320 / 10 channels
