"""Rendering of attention flows: colour wheel, warps, error, heatmaps, grid layout and the HTML page (no model)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from leffa.errors import LeffaError
from leffa.flow import coordinate_grid, flow_epe
from leffa.probe import layer_flows, parse_points, resolve_layers, short_layer_name, token_index
from leffa.viz.render import (
    DIRECTION_COLOURS,
    INVALID_COLOUR,
    default_tile_height,
    displacement_colours,
    flow_rows,
    ideal_token_flow,
    image_array,
    pixel_grid,
    render_flow_grid,
    render_flow_html,
)

H, W = 16, 24


def reference_image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, H, W, generator=generator) * 2 - 1


def shifted_flow(pixels_right: int) -> torch.Tensor:
    """Every target pixel reads the reference ``pixels_right`` pixels to its right."""
    flow = pixel_grid(H, W).clone()
    flow[..., 0] += 2 * pixels_right / W
    return flow[None]


# -- colour wheel -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction, vector", [("right", (1, 0)), ("down", (0, 1)), ("left", (-1, 0)), ("up", (0, -1))])
def test_axis_directions_have_documented_colours(direction, vector):
    displacement = np.broadcast_to(np.array(vector, dtype=np.float64) * 3.0, (2, 2, 2))
    colours = displacement_colours(displacement, radius=3.0)
    assert (colours == np.array(DIRECTION_COLOURS[direction], dtype=np.uint8)).all()


def test_colour_saturation_follows_length_and_invalid_is_grey():
    displacement = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [4.0, 0.0], [np.nan, 0.0]]])
    colours = displacement_colours(displacement, radius=2.0)
    assert tuple(colours[0, 0]) == (255, 255, 255)  # no displacement: white
    assert tuple(colours[0, 1]) == (255, 128, 128)  # half length: half-saturated red
    assert tuple(colours[0, 2]) == (255, 0, 0)
    assert tuple(colours[0, 3]) == (191, 0, 0)  # beyond the radius: darker
    assert tuple(colours[0, 4]) == INVALID_COLOUR


def test_hue_is_continuous_across_the_right_axis():
    """Just above and below the +x axis both stay red (the wheel wraps at red)."""
    displacement = np.array([[[1.0, 1e-9], [1.0, -1e-9], [1.0, -0.0]]])
    colours = displacement_colours(displacement, radius=1.0).astype(int)
    assert np.abs(colours - np.array([255, 0, 0])).max() <= 1


# -- flows given directly (the training-dump path) --------------------------------------------------------------


def test_identity_flow_warps_to_the_reference_and_is_white():
    reference = reference_image()
    rows = flow_rows(reference, {"identity": pixel_grid(H, W)[None]})
    flow_tile, warped_tile = rows[1].tiles[:2]
    assert (flow_tile.picture == 255).all()
    np.testing.assert_array_equal(warped_tile.picture, image_array(reference[0]))


def test_rightward_shift_warps_and_colours_as_expected():
    reference = reference_image()
    rows = flow_rows(reference, {"shift": shifted_flow(3)}, radius=3.0)
    flow_tile, warped_tile = rows[1].tiles[:2]
    expected = torch.zeros_like(reference)  # zero padding where the shift leaves the reference
    expected[..., : W - 3] = reference[..., 3:]
    expected_picture = image_array(expected[0]).astype(int)
    np.testing.assert_array_equal(warped_tile.picture[:, : W - 3], expected_picture[:, : W - 3])
    assert np.abs(warped_tile.picture[:, W - 3 :] - expected_picture[:, W - 3 :]).max() <= 1  # 0 rounds to 127/128
    assert (flow_tile.picture == np.array(DIRECTION_COLOURS["right"], dtype=np.uint8)).all()
    assert "1/" not in flow_tile.title and f"{H}x{W}" in flow_tile.title


def test_error_tile_reports_masked_mse_of_the_leffa_loss():
    reference = reference_image()
    target = reference_image(seed=1)
    mask = torch.zeros(1, 1, H, W)
    mask[..., 4:10, 5:15] = 1
    rows = flow_rows(reference, {"identity": pixel_grid(H, W)[None]}, target=target, mask=mask)
    error_tile = rows[1].tiles[2]
    expected = (((reference - target) * mask) ** 2).mean().item()
    assert f"{expected:.4f}" in error_tile.detail
    # outside the mask the error picture is dimmed
    assert error_tile.picture[0, 0].sum() < error_tile.picture[6, 8].sum() or (error_tile.picture[6, 8] == 0).all()


def test_ground_truth_flow_tiles_endpoint_error_and_nan():
    reference = reference_image()
    gt = shifted_flow(2)[0].clone()
    gt[:4] = float("nan")
    rows = flow_rows(reference, {"identity": pixel_grid(H, W)[None]}, gt_flow=gt.numpy())
    titles = [tile.title for tile in rows[0].tiles]
    assert titles == ["reference", "ground-truth flow", "warped by GT", "colour wheel"]
    gt_tile = rows[0].tiles[1]
    assert (gt_tile.picture[:4] == np.array(INVALID_COLOUR, dtype=np.uint8)).all()
    assert (gt_tile.picture[4:] == np.array(DIRECTION_COLOURS["right"], dtype=np.uint8)).all()
    assert (rows[0].tiles[2].picture[:4] == 128).all()  # no correspondence: warped to zero (mid grey)
    assert "EPE 2.00 px" in rows[1].tiles[0].detail
    assert flow_epe(shifted_flow(2)[0], torch.as_tensor(gt)) == pytest.approx(0.0, abs=1e-5)
    assert np.isnan(flow_epe(np.zeros((2, 2, 2)), np.full((2, 2, 2), np.nan)))


def test_coarse_flows_are_upsampled_and_labelled_with_their_scale():
    reference = reference_image()
    coarse = coordinate_grid(H // 4, W // 4).reshape(1, H // 4, W // 4, 2)
    rows = flow_rows(reference, {"down_blocks.1.attentions.0.transformer_blocks.0.attn1": coarse})
    assert rows[1].tiles[0].title == f"down1.a0.b0 {H // 4}x{W // 4} 1/4"
    assert rows[1].tiles[0].picture.shape == (H, W, 3)


# -- flows from a constructed attention (the CLI path) ----------------------------------------------------------


def one_hot_attention(height: int, width: int, shift: int, heads: int = 2):
    """Queries/keys whose softmax sends token (r, c) to (r, min(c + shift, width - 1)) in every head."""
    tokens = height * width
    keys = torch.eye(tokens) * 40.0
    destination = [r * width + min(c + shift, width - 1) for r in range(height) for c in range(width)]
    queries = keys[destination]
    return queries.expand(1, heads, -1, -1).contiguous(), keys.expand(1, heads, -1, -1).contiguous()


def test_constructed_identity_attention_gives_the_token_grid():
    queries, keys = one_hot_attention(H // 2, W // 2, shift=0)
    flows, _ = layer_flows({"layer": (queries, keys)}, (H, W))
    expected = coordinate_grid(H // 2, W // 2).reshape(1, H // 2, W // 2, 2)
    torch.testing.assert_close(flows["layer"], expected, atol=1e-5, rtol=0)


def test_constructed_rightward_attention_is_red_and_warps_by_its_flow():
    height, width, shift = 5, 8, 3  # odd height: the middle row has no vertical component at all
    queries, keys = one_hot_attention(height, width, shift)
    flows, _ = layer_flows({"layer": (queries, keys)}, (height, width))
    grid = coordinate_grid(height, width).reshape(height, width, 2)
    columns = torch.clamp(torch.arange(width) + shift, max=width - 1)
    torch.testing.assert_close(flows["layer"][0], grid[:, columns], atol=1e-5, rtol=0)

    reference = torch.rand(1, 3, height, width) * 2 - 1
    rows = flow_rows(reference, flows)
    colours = rows[1].tiles[0].picture.astype(int)
    moving = slice(0, width - shift)  # columns whose attention really moved right
    assert (colours[:, moving, 0] == 255).all()  # red channel saturated: hue in the red sector
    assert (colours[:, moving, 1:] < 255).all()
    middle = colours[height // 2, moving]
    assert (middle[:, 1] == middle[:, 2]).all()  # pure red (equal G and B) where the shift is purely horizontal
    sampled = torch.nn.functional.grid_sample(reference, grid[:, columns][None], align_corners=False)
    np.testing.assert_array_equal(rows[1].tiles[1].picture, image_array(sampled[0]))


def test_point_attention_row_is_the_token_under_the_point():
    height, width, shift = 4, 6, 2
    queries, keys = one_hot_attention(height, width, shift)
    size = (height * 4, width * 4)
    points = [(5, 9), (0, 0), (23, 15)]  # (x, y) image pixels
    _, attention = layer_flows({"layer": (queries, keys)}, size, points)
    maps = attention["layer"][0]
    assert maps.shape == (3, height, width)
    for map_, (x, y) in zip(maps, points, strict=True):
        row, column = y // 4, x // 4
        assert divmod(int(map_.argmax()), width) == (row, min(column + shift, width - 1))
        assert map_.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert token_index((23, 15), (height, width), size) == height * width - 1


# -- layout, HTML, user input -----------------------------------------------------------------------------------


def test_grid_png_has_the_expected_tiles_and_size():
    reference = reference_image()
    target = reference_image(seed=1)
    flows = {"identity": pixel_grid(H, W)[None], "shift": shifted_flow(3)}
    attention = {name: torch.full((1, 2, H, W), 1.0 / (H * W)) for name in flows}
    picture = render_flow_grid(
        reference, flows, target=target, points=[(1, 2), (3, 4)], attention=attention, tile_height=64, radius=3.0
    )
    # 3 rows (inputs + 2 layers); 5 columns (flow, warped, error, 2 heatmaps); tiles 96 wide, 64 + 34 caption high
    cell_width, cell_height, gap = 96, 64 + 34, 4
    assert picture.size == (5 * (cell_width + gap) + gap, 3 * (cell_height + gap) + gap)
    array = np.asarray(picture)
    top = gap + (cell_height + gap) + 34  # picture area of the first layer row
    identity_flow = array[top : top + 64, gap : gap + cell_width]
    assert (identity_flow == 255).all()
    top += cell_height + gap
    shift_flow = array[top : top + 64, gap : gap + cell_width]
    assert (shift_flow == np.array(DIRECTION_COLOURS["right"], dtype=np.uint8)).all()


def test_batched_flows_render_one_block_per_sample():
    reference = torch.cat([reference_image(0), reference_image(1), reference_image(2)])
    flows = {"identity": pixel_grid(H, W)[None].expand(3, -1, -1, -1)}
    one = render_flow_grid(reference[:1], {"identity": flows["identity"][:1]}, tile_height=64)
    two = render_flow_grid(reference, flows, tile_height=64, max_samples=2)
    assert two.width == one.width and two.height > 2 * one.height - 10


def test_html_page_is_self_contained_with_one_section_per_layer():
    reference = reference_image()
    flows = {"down_blocks.0.attentions.0.transformer_blocks.0.attn1": pixel_grid(H, W)[None], "b": shifted_flow(1)}
    page = render_flow_html(reference, flows, target=reference_image(1), title="t <x>")
    assert page.count('class="layer"') == 2
    assert 'data-name="down_blocks.0.attentions.0.transformer_blocks.0.attn1"' in page
    assert "t &lt;x&gt;" in page and "<x>" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3 + 2 * 3  # inputs: reference, target, wheel; per layer: flow, warped, error
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http" not in page.replace("http-equiv", "")
    Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1]))).verify()


def test_short_layer_names():
    assert short_layer_name("down_blocks.1.attentions.0.transformer_blocks.0.attn1") == "down1.a0.b0"
    assert short_layer_name("mid_block.attentions.0.transformer_blocks.1.attn1") == "mid.a0.b1"
    assert short_layer_name("up_blocks.3.attentions.2.transformer_blocks.0.attn1") == "up3.a2.b0"
    assert short_layer_name("something.else") == "something.else"


def test_layer_selection_by_full_or_short_name_and_unknown_names():
    names = [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1",
        "mid_block.attentions.0.transformer_blocks.0.attn1",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn1",
    ]
    assert resolve_layers("all", names) == names
    assert resolve_layers("up1.a0.b0, down_blocks.0.attentions.0.transformer_blocks.0.attn1", names) == [
        names[0],
        names[2],
    ]
    with pytest.raises(LeffaError, match=r"--layers 'up9.a0.b0': no such self-attention layer; this model has: "):
        resolve_layers("up9.a0.b0", names)
    with pytest.raises(LeffaError, match="at least one"):
        resolve_layers(" , ", names)


@pytest.mark.parametrize(
    "text, message",
    [
        ("10", "expected x,y"),
        ("a,b", "expected x,y"),
        ("1.5,2", "expected x,y"),
        ("24,3", "outside the 16x24 image"),
        ("3,16", "outside the 16x24 image"),
        ("-1,3", "outside the 16x24 image"),
        ("101%,3", "outside the 16x24 image"),
        ("50%", "expected x,y"),
    ],
)
def test_bad_points_are_one_line_errors(text, message):
    with pytest.raises(LeffaError, match=message) as error:
        parse_points([text], (H, W))
    assert "\n" not in str(error.value)


def test_points_parse_repeated_and_quoted():
    assert parse_points(["1,2", "3,4 5,6;7,8"], (H, W)) == [(1, 2), (3, 4), (5, 6), (7, 8)]


def test_points_in_percent_fit_any_size():
    """Percentages name the same place at every working size: 0% the first pixel, 100% the last."""
    assert parse_points(["0%,0% 100%,100%", "50%,25%"], (H, W)) == [(0, 0), (W - 1, H - 1), (12, 4)]
    assert parse_points(["50%,40%"], (64, 48)) == [(24, 25)]
    assert parse_points(["2,50%"], (H, W)) == [(2, 8)]


def test_default_tile_height_keeps_pictures_readable():
    assert default_tile_height(64) == 224 and default_tile_height(1024) == 320 and default_tile_height(256) == 256


def test_ideal_token_flow_averages_the_ground_truth_per_cell():
    gt = shifted_flow(2).clone()  # 16x24 image, rightward shift by 2 px
    gt[:, :4, :8] = float("nan")  # one 4x8 cell without correspondence
    gt[:, 4:8, :8][:, :2] = float("nan")  # half of the next cell down
    ideal = ideal_token_flow(gt, (4, 3))
    assert ideal.shape == (1, 4, 3, 2)
    torch.testing.assert_close(ideal[0, 0, 0], coordinate_grid(4, 3)[0])  # no ground truth: its own position
    torch.testing.assert_close(ideal[0, 1, 0], gt[0, 6:8, :8].reshape(-1, 2).mean(0))  # the valid half only
    torch.testing.assert_close(ideal[0, 2, 1], gt[0, 8:12, 8:16].reshape(-1, 2).mean(0))
    with pytest.raises(ValueError, match="does not tile"):
        ideal_token_flow(gt, (5, 3))
