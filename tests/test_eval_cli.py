"""``leffa eval`` end to end, in process: folders with local weight files, errors, --compare, --flow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from leffa_cli.app import main


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(capsys, *args):
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("pred", "gt"):
        (tmp_path / name).mkdir()
    for index in range(3):
        gt = rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)
        Image.fromarray(gt).save(tmp_path / "gt" / f"p{index}.png")
        pred = np.clip(gt.astype(int) + rng.integers(-10, 11, gt.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pred).save(tmp_path / "pred" / f"p{index}.jpg")
    return tmp_path


@pytest.fixture
def weights(tmp_path):
    """Randomly initialised networks saved under the published file names (the real files are not shipped)."""
    from leffa.metrics.inception import FIDInceptionV3
    from leffa.metrics.lpips import LPIPSSqueeze

    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    lpips = LPIPSSqueeze()
    (tmp_path / "lpips").mkdir()
    torch.save(lpips.backbone.state_dict(), tmp_path / "lpips" / "squeezenet1_1-b8a52dc0.pth")
    torch.save(lpips.linear.state_dict(), tmp_path / "lpips" / "squeeze.pth")
    return tmp_path


def test_paired_all_metrics_with_local_weights(capsys, images, weights):
    code, out, err = run(
        capsys,
        "eval",
        "--pred",
        str(images / "pred"),
        "--gt",
        str(images / "gt"),
        "--inception",
        str(weights / "pt_inception-2015-12-05-6726825d.pth"),
        "--lpips",
        str(weights / "lpips"),
        "-o",
        str(images / "run.json"),
        "--name",
        "baseline",
        "--device",
        "cpu",
    )
    assert code == 0, err
    for column in ("FID", "KID", "SSIM", "LPIPS", "PSNR", "baseline"):
        assert column in out
    result = json.loads((images / "run.json").read_text())
    assert result["mode"] == "paired" and result["count"] == 3 and result["name"] == "baseline"
    assert set(result["metrics"]) == {"fid", "kid", "kid_std", "ssim", "lpips", "psnr"}
    assert set(result["per_image"]) == {"p0", "p1", "p2"}
    assert 0 < result["metrics"]["ssim"] < 1 and result["metrics"]["psnr"] > 8  # JPEG predictions of noise


def test_metric_subset_needs_no_weights_and_json_defaults_beside_pred(capsys, images):
    code, out, err = run(
        capsys, "eval", "--pred", str(images / "pred"), "--gt", str(images / "gt"), "--metrics", "ssim,psnr"
    )
    assert code == 0, err
    written = images / "pred.paired.eval.json"
    assert written.is_file() and str(written) in out.replace("\n", "")
    assert set(json.loads(written.read_text())["metrics"]) == {"ssim", "psnr"}


def test_user_mistakes_are_one_line_errors(capsys, images, tmp_path):
    (images / "pred" / "extra.png").write_bytes((images / "gt" / "p0.png").read_bytes())
    code, out, err = run(
        capsys, "eval", "--pred", str(images / "pred"), "--gt", str(images / "gt"), "--metrics", "psnr"
    )
    assert code == 2
    assert err.strip().count("\n") == 0 and "extra.png: no ground truth named 'extra'" in err
    code, _, err = run(
        capsys, "eval", "--pred", str(images / "pred"), "--gt", str(images / "gt"), "--metrics", "psnr,ssim2"
    )
    assert code == 2 and "--metrics: 'ssim2'" in err
    code, _, err = run(
        capsys,
        "eval",
        "--pred",
        str(images / "pred"),
        "--gt",
        str(images / "gt"),
        "--unpaired",
        "--inception",
        str(tmp_path / "absent.pth"),
    )
    assert code == 2 and "absent.pth: FID Inception (pytorch-fid) weights file not found" in err
    code, _, err = run(capsys, "eval", "--pred", str(images / "pred"))
    assert code == 2 and "--gt" in err


def test_compare_writes_a_chart(capsys, tmp_path):
    for name, fid in (("a", 5.0), ("b", 7.5)):
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"mode": "paired", "count": 10, "metrics": {"fid": fid, "ssim": 0.9}, "pred": "p", "gt": "g"})
        )
    code, out, err = run(
        capsys,
        "eval",
        "--compare",
        str(tmp_path / "a.json"),
        str(tmp_path / "b.json"),
        "-o",
        str(tmp_path / "chart.png"),
    )
    assert code == 0, err
    assert "7.50" in out and "5.00" in out
    with Image.open(tmp_path / "chart.png") as chart:
        assert chart.size[0] > 300
    code, _, err = run(capsys, "eval", "--compare", str(tmp_path / "a.json"), "-o", str(tmp_path / "chart.jpg"))
    assert code == 2 and "must be a .png" in err


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """The tiny random model saved once for the --flow and --run tests (building it is the slow part)."""
    from conftest import TINY_SD15

    from leffa.checkpoint import save_model
    from leffa.model import LeffaModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(LeffaModel.from_base_folder(TINY_SD15).eval(), path, dtype="fp32")
    return path


def test_flow_mode_with_a_saved_model(capsys, tmp_path, saved_tiny):
    from test_metrics_flow import write_flow_dataset

    root = write_flow_dataset(tmp_path / "data", names=("s0",))
    code, out, err = run(
        capsys,
        "eval",
        "--flow",
        "--model",
        str(saved_tiny),
        "--data",
        str(root),
        "--t",
        "250",
        "--layers",
        "down0.a0.b0,mid.a0.b0",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "down0.a0.b0" in out and "mid.a0.b0" in out and "mean" in out
    result = json.loads((root / "flow-epe.test.t250.tiny.json").read_text())
    assert list(result["metrics"]) == ["down0.a0.b0", "mid.a0.b0", "mean"]
    code, _, err = run(capsys, "eval", "--flow", "--data", str(root))
    assert code == 2 and "--flow needs --model" in err


def test_run_generates_a_split_and_scores_it(capsys, tmp_path, saved_tiny):
    from test_metrics_flow import write_flow_dataset

    root = write_flow_dataset(tmp_path / "data", names=("s0", "s1"))
    args = (
        "eval",
        "--run",
        "--model",
        str(saved_tiny),
        "--data",
        str(root),
        "--out-dir",
        str(tmp_path / "out"),
        "--size",
        "64x48",
        "--steps",
        "2",
        "--metrics",
        "ssim,psnr",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--batch-size",
        "2",
    )
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "2 images generated" in out
    assert sorted(p.name for p in (tmp_path / "out" / "pred").iterdir()) == ["s0.png", "s1.png"]
    with Image.open(tmp_path / "out" / "pred" / "s0.png") as image:
        assert image.size == (48, 64)
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert result["count"] == 2 and result["settings"]["sampler"]["steps"] == 2
    assert result["settings"]["model"].endswith("tiny.safetensors") and result["settings"]["seed"] == 42
    first = result["metrics"]
    code, out, err = run(capsys, *args)  # resumes: nothing left to generate, same scores
    assert code == 0 and "0 images generated" in out
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["metrics"] == first
    # Other weights behind the same file name, or another sampler: the old predictions are not scored as theirs.
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other" / saved_tiny.name
    other.parent.mkdir()
    state = load_file(saved_tiny)
    name = next(k for k in state if k.endswith("conv_in.weight"))
    state[name] = state[name] + 0.01
    save_file(state, other, metadata=safe_open_metadata(saved_tiny))
    changed = list(args)
    changed[changed.index(str(saved_tiny))] = str(other)
    code, _, err = run(capsys, *changed)
    assert code == 2 and "holds predictions made with other settings (model, weights differ)" in err, err
    code, _, err = run(capsys, *args[:-2], "--batch-size", "2", "--steps", "3")
    assert code == 2 and "(sampler differ)" in err, err
    assert sorted(p.name for p in (tmp_path / "out" / "pred").iterdir()) == ["s0.png", "s1.png"]
    code, _, err = run(capsys, "eval", "--run", "--data", str(root), "--pred", str(tmp_path))
    assert code == 2 and "--run writes its own predictions" in err


def safe_open_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_unpaired_run_on_synthetic_data_is_scored_against_the_real_unpaired_truth(capsys, tmp_path, saved_tiny):
    """`prep synth --unpaired` data: --run --unpaired writes the person-in-the-other-garment as ground truth, the
    mask and the garment region, and scores masked PSNR, outside-mask PSNR and Delta E pixel for pixel."""
    from leffa.synth.dataset import generate_dataset

    root = tmp_path / "data"
    generate_dataset("vton", root, 2, (64, 48), seed=0, split="test", unpaired=True)
    out = tmp_path / "out"
    code, out_text, err = run(
        capsys,
        "eval",
        "--run",
        "--unpaired",
        "--model",
        str(saved_tiny),
        "--data",
        str(root),
        "--out-dir",
        str(out),
        "--steps",
        "2",
        "--size",
        "64x48",  # the random test model records no trained size
        "--metrics",
        "ssim,psnr,psnr_mask,psnr_outside,delta_e",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
    )
    assert code == 0, err
    names = ["000000__000001.png", "000001__000000.png"]
    for folder in ("pred", "gt", "mask", "region"):
        assert sorted(p.name for p in (out / folder).iterdir()) == names
    truth = np.asarray(Image.open(root / "test" / "image-unpaired" / names[0]))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "gt" / names[0])), truth)
    result = json.loads((out / "eval.json").read_text())
    assert result["mode"] == "unpaired-gt" and result["count"] == 2
    assert list(result["metrics"]) == ["ssim", "psnr", "psnr_mask", "psnr_outside", "delta_e"]
    assert all(np.isfinite(v) for v in result["metrics"].values())

    # The same folders scored with --pred/--gt/--mask/--region give the same numbers; a ground truth scored
    # against itself is perfect on every region metric.
    code, _, err = run(
        capsys,
        "eval",
        "--pred",
        str(out / "pred"),
        "--gt",
        str(out / "gt"),
        "--mask",
        str(out / "mask"),
        "--region",
        str(out / "region"),
        "--metrics",
        "psnr_mask,delta_e",
        "-o",
        str(tmp_path / "again.json"),
    )
    assert code == 0, err
    again = json.loads((tmp_path / "again.json").read_text())["metrics"]
    assert again["psnr_mask"] == pytest.approx(result["metrics"]["psnr_mask"])
    assert again["delta_e"] == pytest.approx(result["metrics"]["delta_e"])
    code, _, err = run(
        capsys,
        "eval",
        "--pred",
        str(out / "gt"),
        "--gt",
        str(out / "gt"),
        "--mask",
        str(out / "mask"),
        "--region",
        str(out / "region"),
        "--metrics",
        "psnr_mask,psnr_outside,delta_e",
        "-o",
        str(tmp_path / "self.json"),
    )
    assert code == 0, err
    perfect = json.loads((tmp_path / "self.json").read_text())["metrics"]
    assert perfect["psnr_mask"] == pytest.approx(100.0) and perfect["delta_e"] == pytest.approx(0.0, abs=1e-3)

    code, _, err = run(capsys, "eval", "--pred", str(out / "pred"), "--gt", str(out / "gt"), "--metrics", "delta_e")
    assert code == 2 and "--metrics delta_e: needs --region DIR" in err
