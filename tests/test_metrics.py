"""Image metrics: SSIM/PSNR against scikit-image, FID/KID/LPIPS code paths with stand-in networks, file handling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio as skimage_psnr
from skimage.metrics import structural_similarity as skimage_ssim

from leffa.errors import LeffaError
from leffa.metrics.chart import compare_chart
from leffa.metrics.lpips import LPIPSSqueeze
from leffa.metrics.scores import (
    EvalResult,
    FeatureSetMetrics,
    MetricNetworks,
    check_metrics,
    evaluate_folders,
    load_image,
    match_pairs,
    psnr,
    read_result,
    ssim,
    write_result,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small convolutions run faster on one thread than on two contended ones; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class StandInFeatures(torch.nn.Module):
    """A small deterministic feature network in place of Inception (same interface: [0, 1] images -> (B, d))."""

    num_features = 24

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 24, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.3)
            self.conv.bias.zero_()

    def forward(self, images):
        return torch.tanh(self.conv(images * 2 - 1)).mean(dim=(2, 3))


def _random_image(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _noisy(rng, image, amount):
    return np.clip(image.astype(int) + rng.integers(-amount, amount + 1, image.shape), 0, 255).astype(np.uint8)


def _smooth_image(rng, height, width):
    """Smooth random content (SSIM on pure noise is near zero and tells little)."""
    small = rng.random((height // 8 + 1, width // 8 + 1, 3))
    big = Image.fromarray((small * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return np.array(big)


def _make_folders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("pred", "gt", "other"):
        (tmp_path / name).mkdir()
    for index in range(10):
        gt = _smooth_image(rng, 80, 64)
        Image.fromarray(gt).save(tmp_path / "gt" / f"{index:02d}.png")
        pred = _noisy(rng, np.asarray(Image.fromarray(gt).resize((48, 60), Image.Resampling.LANCZOS)), 12)
        Image.fromarray(pred).save(tmp_path / "pred" / f"{index:02d}.png")
        Image.fromarray(_random_image(rng, 60, 48)).save(tmp_path / "other" / f"{index:02d}.png")
    return tmp_path


@pytest.fixture
def folders(tmp_path):
    """pred/ and gt/ with 10 stem-matched pairs (gt larger, so it is resized), plus a different set other/."""
    return _make_folders(tmp_path)


def _networks():
    torch.manual_seed(0)
    lpips = LPIPSSqueeze().eval()
    with torch.no_grad():  # published LPIPS weightings are non-negative; random ones need not be
        for parameter in lpips.linear.parameters():
            parameter.abs_()
    return MetricNetworks(inception=StandInFeatures().eval(), lpips=lpips)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """All five metrics once per case (module-wide, to keep the file fast): close pairs, a set against itself,
    and an unrelated set compared unpaired."""
    root = _make_folders(tmp_path_factory.mktemp("sets"))
    networks = _networks()
    return {
        "close": evaluate_folders(root / "pred", root / "gt", networks, batch_size=4),
        "self": evaluate_folders(root / "pred", root / "pred", networks, batch_size=3),
        "far": evaluate_folders(root / "other", root / "gt", networks, paired=False),
    }


# -- SSIM / PSNR against an independent implementation -----------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 48), (128, 96), (33, 70)])
def test_ssim_and_psnr_equal_scikit_image(size):
    rng = np.random.default_rng(1)
    for amount in (4, 25, 80):
        a = _smooth_image(rng, *size)
        b = _noisy(rng, a, amount)
        x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
        y = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
        reference_ssim = skimage_ssim(
            a / 255.0,
            b / 255.0,
            channel_axis=-1,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        reference_psnr = skimage_psnr(a / 255.0, b / 255.0, data_range=1.0)
        assert float(ssim(x, y)) == pytest.approx(reference_ssim, abs=2e-5)
        assert float(psnr(x, y)) == pytest.approx(reference_psnr, abs=1e-4)


def test_ssim_is_per_image_in_a_batch():
    rng = np.random.default_rng(2)
    images = [_smooth_image(rng, 40, 32) for _ in range(3)]
    noisy = [_noisy(rng, image, amount) for image, amount in zip(images, (2, 30, 90))]
    x = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images]).float() / 255
    y = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in noisy]).float() / 255
    batched = ssim(x, y)
    single = torch.cat([ssim(x[i : i + 1], y[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single)
    assert batched[0] > batched[1] > batched[2]


def test_folder_ssim_psnr_match_scikit_image_after_lanczos_resize(folders):
    result = evaluate_folders(
        folders / "pred", folders / "gt", MetricNetworks(), metrics=["ssim", "psnr"], batch_size=4
    )
    expected_ssim, expected_psnr = [], []
    for index in range(10):
        pred = np.asarray(Image.open(folders / "pred" / f"{index:02d}.png").convert("RGB")) / 255.0
        gt = Image.open(folders / "gt" / f"{index:02d}.png").convert("RGB").resize((48, 60), Image.Resampling.LANCZOS)
        gt = np.asarray(gt) / 255.0
        expected_ssim.append(
            skimage_ssim(
                pred, gt, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
        )
        expected_psnr.append(skimage_psnr(gt, pred, data_range=1.0))
        assert result.per_image[f"{index:02d}"]["ssim"] == pytest.approx(expected_ssim[-1], abs=2e-5)
    assert result.metrics["ssim"] == pytest.approx(np.mean(expected_ssim), abs=2e-5)
    assert result.metrics["psnr"] == pytest.approx(np.mean(expected_psnr), abs=1e-4)
    assert list(result.metrics) == ["ssim", "psnr"]


# -- FID / KID / LPIPS with stand-in networks --------------------------------------------------------------------


def test_fid_kid_of_a_set_against_itself_is_about_zero(scored):
    result = scored["self"]
    assert abs(result.metrics["fid"]) < 1e-6
    # The unbiased KID estimate of a set against itself is slightly negative (no cross pair is independent).
    assert -5.0 < result.metrics["kid"] <= 1e-9
    assert result.metrics["lpips"] == pytest.approx(0.0, abs=1e-7)
    assert result.metrics["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_fid_kid_grow_with_the_difference_between_sets(scored):
    close, far = scored["close"], scored["far"]
    assert far.metrics["fid"] > 10 * max(close.metrics["fid"], 1e-9)
    assert far.metrics["kid"] > close.metrics["kid"]
    assert set(far.metrics) == {"fid", "kid", "kid_std"}
    assert far.per_image == {}
    assert close.metrics["lpips"] > 0
    assert set(close.per_image["03"]) == {"ssim", "lpips", "psnr"}


def test_fid_equals_the_closed_form_on_the_features():
    """torchmetrics' FID on our accumulated features equals the Frechet distance computed with scipy."""
    from scipy import linalg

    torch.manual_seed(0)
    real, fake = torch.rand(40, 3, 16, 16), (torch.rand(40, 3, 16, 16) * 0.8 + 0.1)
    network = StandInFeatures()
    sets = FeatureSetMetrics(network, ["fid"])
    sets.update(real[:25], real=True)
    sets.update(real[25:], real=True)
    sets.update(fake, real=False)
    with torch.no_grad():
        f1, f2 = network(real).double().numpy(), network(fake).double().numpy()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert sets.compute()["fid"] == pytest.approx(expected, rel=1e-6)


def test_kid_is_reproducible_and_uses_at_most_the_set_size():
    torch.manual_seed(0)
    sets = FeatureSetMetrics(StandInFeatures(), ["kid"])
    sets.update(torch.rand(12, 3, 16, 16), real=True)
    sets.update(torch.rand(9, 3, 16, 16) * 0.5, real=False)
    first, second = sets.compute(seed=3), sets.compute(seed=3)
    assert first == second
    assert first["kid"] > 0 and first["kid_std"] >= 0


def test_lpips_distance_properties():
    torch.manual_seed(0)
    network = LPIPSSqueeze().eval()
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        same, forward, backward = network(x, x), network(x, y), network(y, x)
        close = network(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1))
    assert same.shape == (2,)
    assert torch.all(same.abs() < 1e-7)
    torch.testing.assert_close(forward, backward)
    assert torch.all(forward > close)


def test_metrics_without_their_network_is_a_clear_error(folders):
    with pytest.raises(LeffaError, match="Inception"):
        evaluate_folders(folders / "pred", folders / "gt", MetricNetworks(), metrics=["fid"])
    with pytest.raises(LeffaError, match="LPIPS"):
        evaluate_folders(folders / "pred", folders / "gt", MetricNetworks(), metrics=["lpips"])
    with pytest.raises(LeffaError, match="'ssim' is not one of the unpaired scores"):
        check_metrics(["ssim"], paired=False)


# -- files ------------------------------------------------------------------------------------------------------


def test_unmatched_and_unreadable_files_are_one_line_errors(folders):
    (folders / "pred" / "99.png").write_bytes((folders / "pred" / "00.png").read_bytes())
    with pytest.raises(LeffaError, match=r"99\.png: no ground truth named '99'") as error:
        match_pairs(folders / "pred", folders / "gt")
    assert "\n" not in str(error.value)
    (folders / "pred" / "99.png").unlink()
    (folders / "pred" / "04.png").unlink()
    with pytest.raises(LeffaError, match="no prediction named '04'"):
        match_pairs(folders / "pred", folders / "gt")
    assert len(match_pairs(folders / "pred", folders / "gt", allow_extra_gt=True)) == 9
    (folders / "pred" / "05.png").write_bytes(b"not an image")
    with pytest.raises(LeffaError, match=r"05\.png: prediction is not an image"):
        evaluate_folders(folders / "pred", folders / "gt", MetricNetworks(), metrics=["psnr"], allow_extra_gt=True)
    (folders / "pred" / "06.jpg").write_bytes(b"x")
    with pytest.raises(LeffaError, match="two images named '06'"):
        match_pairs(folders / "pred", folders / "gt")
    with pytest.raises(LeffaError, match="not found"):
        match_pairs(folders / "missing", folders / "gt")


def test_ground_truth_is_resized_with_lanczos(tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(_random_image(rng, 40, 30)).save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png", size=(20, 15))
    expected = np.asarray(Image.open(tmp_path / "a.png").resize((15, 20), Image.Resampling.LANCZOS)) / 255.0
    assert loaded.shape == (3, 20, 15)
    np.testing.assert_allclose(loaded.permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_result_json_round_trip_and_chart(tmp_path):
    first = EvalResult("paired", 3, {"fid": 4.5, "kid": 0.3, "ssim": 0.9, "lpips": 0.05, "psnr": 25.0}, "p", "g")
    second = EvalResult("paired", 3, {"fid": 6.0, "kid": -0.1, "ssim": 0.8, "lpips": 0.07, "psnr": math.inf}, "q", "g")
    write_result(first, tmp_path / "a.json")
    write_result(second, tmp_path / "b.json")
    assert json.loads((tmp_path / "a.json").read_text())["metrics"]["fid"] == 4.5
    loaded = [read_result(tmp_path / "a.json"), read_result(tmp_path / "b.json")]
    assert loaded[0].metrics == first.metrics and loaded[0].name == "a"
    chart = compare_chart(loaded)
    assert chart.size[0] > 500 and chart.size[1] > 200
    pixels = np.asarray(chart)
    assert (pixels != 255).any(axis=-1).mean() > 0.02  # bars and text were drawn
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LeffaError, match="bad.json: not an evaluation result"):
        read_result(tmp_path / "bad.json")
