"""Flow metrics: end-point error in pixels, attention flow per layer, a synthetic dataset end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from leffa.errors import LeffaError
from leffa.flow import coordinate_grid, flow_epe, upsample_flow
from leffa.metrics.flow import FlowDataset, evaluate_flow
from leffa.probe import layer_flows, resolve_layers, short_layer_name


def test_epe_is_in_pixels_of_the_image():
    height, width = 4, 8
    gt = torch.zeros(height, width, 2)
    pred = gt.clone()
    pred[..., 0] += 0.25  # 0.25 * W / 2 = 1 pixel
    pred[..., 1] += 0.5  # 0.5 * H / 2 = 1 pixel
    assert flow_epe(pred, gt) == pytest.approx(math.sqrt(2))
    assert flow_epe(pred.numpy(), gt.numpy()) == pytest.approx(math.sqrt(2))


def test_epe_ignores_pixels_without_correspondence():
    gt = np.zeros((6, 6, 2), dtype=np.float32)
    pred = np.zeros_like(gt)
    pred[:3] = 5.0  # far off, but where the ground truth has no correspondence
    gt[:3] = np.nan
    assert flow_epe(pred, gt) == 0.0
    assert math.isnan(flow_epe(pred, np.full_like(gt, np.nan)))
    with pytest.raises(ValueError, match="flow shapes"):
        flow_epe(pred[:5], gt)


def _sharp_attention(height, width, shift_x=0, heads=2):
    """Queries and keys whose attention puts (almost) all weight on the token ``shift_x`` columns to the right."""
    tokens = height * width
    eye = torch.eye(tokens) * 60.0
    order = torch.arange(tokens).reshape(height, width)
    target = order.roll(-shift_x, dims=1).reshape(-1)
    queries = eye[target][None, None].expand(1, heads, tokens, tokens)
    keys = eye[None, None].expand(1, heads, tokens, tokens)
    return queries.contiguous(), keys.contiguous()


def test_layer_flows_of_a_sharp_attention_recover_the_correspondence():
    height, width, size = 4, 6, (32, 48)
    identity = upsample_flow(coordinate_grid(height, width).reshape(1, height, width, 2), size)[0]
    grids, _ = layer_flows(
        {"same": _sharp_attention(height, width), "shifted": _sharp_attention(height, width, 1)}, size
    )
    flows = {name: upsample_flow(flow, size) for name, flow in grids.items()}
    assert grids["same"].shape == (1, height, width, 2) and flows["same"].shape == (1, 32, 48, 2)
    assert flow_epe(flows["same"][0], identity) < 0.05
    # Looking one token to the right is off by one token: 2 / (6 - 1) in grid units = 0.4 * 48 / 2 = 9.6 pixels,
    # measured away from the column where the roll wraps around (ground truth NaN there).
    gt = identity.clone()
    gt[:, :4] = float("nan")
    gt[:, 36:] = float("nan")
    assert flow_epe(flows["shifted"][0], gt) == pytest.approx(9.6, rel=1e-3)
    assert flow_epe(flows["same"][0], gt) < 0.05


def test_layer_names_resolve_short_and_full():
    names = [
        "down_blocks.0.attentions.1.transformer_blocks.0.attn1",
        "mid_block.attentions.0.transformer_blocks.0.attn1",
    ]
    assert [short_layer_name(n) for n in names] == ["down0.a1.b0", "mid.a0.b0"]
    assert resolve_layers("all", names) == names == resolve_layers(None, names)
    assert resolve_layers("mid.a0.b0, " + names[0], names) == names
    with pytest.raises(LeffaError, match="--layers 'up9': no such"):
        resolve_layers("up9", names)


def write_flow_dataset(root, names=("s0", "s1"), size=(64, 48)):
    """A VITON-HD-layout test split with gt-flow/, as ``leffa prep synth`` writes it."""
    rng = np.random.default_rng(0)
    split = root / "test"
    height, width = size
    for folder in ("image", "cloth", "agnostic-mask", "image-densepose", "gt-flow"):
        (split / folder).mkdir(parents=True, exist_ok=True)
    for name in names:
        for folder in ("image", "cloth", "image-densepose"):
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                split / folder / f"{name}.jpg"
            )
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[16:48, 8:40] = 255
        Image.fromarray(mask).save(split / "agnostic-mask" / f"{name}_mask.png")
        flow = (rng.random((height, width, 2)) * 2 - 1).astype(np.float32)
        flow[mask == 0] = np.nan
        np.save(split / "gt-flow" / f"{name}.npy", flow)
    (root / "test_pairs.txt").write_text("".join(f"{n}.jpg {n}.jpg\n" for n in names))
    return root


def test_flow_dataset_reads_the_training_layout(tmp_path):
    root = write_flow_dataset(tmp_path / "data")
    dataset = FlowDataset(root)
    assert len(dataset) == 2 and dataset.size == (64, 48)
    name, sample = dataset[1]
    assert name == "s1"
    assert sample.target.shape == (1, 3, 64, 48) and sample.gt_flow.shape == (1, 64, 48, 2)
    assert sample.mask.sum() == 32 * 32
    assert len(FlowDataset(root, limit=1)) == 1
    with pytest.raises(LeffaError, match="no gt-flow/ folder"):
        FlowDataset(root, split="train")


def test_evaluate_flow_on_a_tiny_model(tmp_path, tiny_model):
    root = write_flow_dataset(tmp_path / "data", names=("s0",))
    torch.set_num_threads(1)
    result = evaluate_flow(tiny_model, root, timestep=250)
    assert result.mode == "flow" and result.count == 1
    layers = [short_layer_name(n) for n in tiny_model.layer_names]
    assert list(result.metrics) == [*layers, "mean"]
    assert all(np.isfinite(v) and 0 < v < 64 for v in result.metrics.values())
    assert result.settings["layers"][layers[0]]["downscale"] == 8
    again = evaluate_flow(tiny_model, root, timestep=250, layers=tiny_model.layer_names[:1])
    assert list(again.metrics) == [layers[0], "mean"]
    assert again.metrics[layers[0]] == pytest.approx(result.metrics[layers[0]], rel=1e-5)  # same seeded noise
    with pytest.raises(LeffaError, match="--t 5000: the timestep must be in 0..999"):
        evaluate_flow(tiny_model, root, timestep=5000)
