"""DensePose end to end on CPU: the real network layout with random weights, the library call and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import leffa.densepose.estimator as estimator_module
from leffa.densepose import DensePoseConfig, DensePoseEstimator, densepose_image
from leffa.densepose.network import DensePoseRCNN
from leffa.errors import LeffaError

# Real layer shapes; a small input and 100 proposals keep the run short on 2 CPU cores.
SMALL = DensePoseConfig(min_size=256, max_size=512, rpn_post_nms_topk=100, max_detections=2)


def _network(person_logit: float) -> DensePoseRCNN:
    """Random weights, except the box classifier, which gives every RoI the same person logit: a large one forces
    detections, a negative one forces none."""
    torch.manual_seed(0)
    model = DensePoseRCNN(SMALL)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.zero_()
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([person_logit, 0.0]))
    return model


@pytest.fixture(scope="module")
def estimator() -> DensePoseEstimator:
    return DensePoseEstimator(model=_network(10.0), config=SMALL)


@pytest.fixture(scope="module")
def person() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (320, 240, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def result(estimator, person):
    return estimator.predict(person)


def test_random_network_detects_and_estimates_densepose(result, person):
    assert 1 <= len(result) <= 2
    assert result.image_size == (320, 240)
    boxes = result.boxes
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 240).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 3] <= 320).all() and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    assert result.charts.coarse_segm.shape == (len(result), 2, 112, 112)
    for maps in (result.charts.fine_segm, result.charts.u, result.charts.v):
        assert maps.shape == (len(result), 25, 112, 112) and torch.isfinite(maps).all()


@pytest.mark.parametrize("kind", ["iuv", "index", "seg"])
def test_renderings_sit_inside_the_main_box(result, kind):
    image = np.asarray(result.render(kind))
    assert image.shape == (320, 240, 3) and image.dtype == np.uint8
    x, y, w, h = result.person(0).box_xywh
    outside = image.copy()
    outside[y : y + h, x : x + w] = 0
    assert outside.max() == 0
    labels = result.person(0).labels.numpy()
    if kind == "iuv":
        assert np.array_equal(image[y : y + h, x : x + w, 2], labels)
    if kind == "index":
        assert np.array_equal(image[y : y + h, x : x + w, 0], labels) and image.max() <= 24


def test_swapped_channels_change_the_network_input(estimator, person):
    assert DensePoseEstimator(model=estimator.model, config=SMALL).swap_channels  # Leffa's app: RGB in BGR slots
    true_bgr = DensePoseEstimator(model=estimator.model, config=SMALL, swap_channels=False)
    a = estimator_module.preprocess(person, SMALL, true_bgr.swap_channels)[0]
    b = estimator_module.preprocess(person, SMALL)[0]
    assert a.shape == (1, 3, 352, 256)  # 320 x 240 -> 341 x 256, padded to multiples of 32
    # blue first vs red first, on the unpadded 341 x 256 part
    assert torch.allclose(a[0, 0, :341] + 103.53, b[0, 2, :341] + 123.675)


class _FixedEstimator:
    """Stands in for the network where only the code around it is under test: returns a prepared result."""

    config = SMALL

    def __init__(self, result):
        self.result = result

    def predict(self, image):
        return self.result


def test_no_person_is_an_error_unless_empty_is_allowed(person, result):
    empty = torch.zeros(0, 1, 1, 1)
    nobody = _FixedEstimator(
        estimator_module.DensePoseResult(
            (320, 240), torch.zeros(0, 4), torch.zeros(0), estimator_module.ChartOutput(empty, empty, empty, empty)
        )
    )
    with pytest.raises(LeffaError, match="no person found"):
        densepose_image(person, "seg", estimator=nobody)
    assert np.asarray(densepose_image(person, "iuv", estimator=nobody, allow_empty=True)).max() == 0
    with pytest.raises(LeffaError, match="kind: unknown"):
        densepose_image(person, "uv", estimator=nobody)


def test_cli_writes_the_image(tmp_path, monkeypatch, person, result):
    from leffa_cli.app import main

    source = tmp_path / "person.png"
    person.save(source)
    seen = {}

    def cached(weights, device, offline, config, swap_channels):
        seen.update(weights=weights, device=device, offline=offline, config=config, swap_channels=swap_channels)
        return _FixedEstimator(result)

    monkeypatch.setattr(estimator_module, "_cached_estimator", cached)
    out = tmp_path / "dp" / "index.png"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "prep",
                "densepose",
                str(source),
                "-o",
                str(out),
                "--kind",
                "index",
                "--device",
                "cpu",
                "--weights",
                str(tmp_path / "w.pkl"),
                "--no-swap-channels",
            ]
        )
    assert exit_info.value.code in (0, None)
    assert seen == {"weights": str(tmp_path / "w.pkl"), "device": "cpu", "offline": False, "config": None,
                    "swap_channels": False}  # fmt: skip
    written = Image.open(out)
    assert written.size == (240, 320) and written.mode == "RGB"
    assert np.array_equal(np.asarray(written), np.asarray(result.render("index")))


def test_cli_offline_without_cached_weights_fails_in_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from leffa_cli.app import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    estimator_module._cached_estimator.cache_clear()
    source = tmp_path / "person.png"
    Image.new("RGB", (32, 32)).save(source)
    with pytest.raises(SystemExit) as exit_info:
        main(["prep", "densepose", str(source), "-o", str(tmp_path / "o.png"), "--offline", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model_final_162be9.pkl" in err and "--offline" in err
    assert not (tmp_path / "o.png").exists()
