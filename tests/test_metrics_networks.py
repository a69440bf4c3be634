"""The metric networks match the published weight files: names and shapes written out from the published
architectures (pytorch-fid's FID Inception-v3, torchvision's SqueezeNet 1.1, lpips v0.1 linear layers)."""

from __future__ import annotations

import pytest
import torch

from leffa.errors import LeffaError
from leffa.metrics.inception import FIDInceptionV3, load_fid_inception
from leffa.metrics.lpips import LPIPSSqueeze, load_lpips
from leffa.metrics.scores import load_metric_networks
from leffa.metrics.weights import INCEPTION_FILE, SQUEEZENET_FILE, SQUEEZENET_URL, packaged_lpips_linear


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- expected state dicts, from the published architectures --------------------------------------------------------


def _inception_a(name, cin, pool):
    return [
        (f"{name}.branch1x1", cin, 64, 1, 1),
        (f"{name}.branch5x5_1", cin, 48, 1, 1),
        (f"{name}.branch5x5_2", 48, 64, 5, 5),
        (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
        (f"{name}.branch3x3dbl_2", 64, 96, 3, 3),
        (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
        (f"{name}.branch_pool", cin, pool, 1, 1),
    ]


def _inception_c(name, c7):
    return [
        (f"{name}.branch1x1", 768, 192, 1, 1),
        (f"{name}.branch7x7_1", 768, c7, 1, 1),
        (f"{name}.branch7x7_2", c7, c7, 1, 7),
        (f"{name}.branch7x7_3", c7, 192, 7, 1),
        (f"{name}.branch7x7dbl_1", 768, c7, 1, 1),
        (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
        (f"{name}.branch7x7dbl_3", c7, c7, 1, 7),
        (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
        (f"{name}.branch7x7dbl_5", c7, 192, 1, 7),
        (f"{name}.branch_pool", 768, 192, 1, 1),
    ]


def _inception_e(name, cin):
    return [
        (f"{name}.branch1x1", cin, 320, 1, 1),
        (f"{name}.branch3x3_1", cin, 384, 1, 1),
        (f"{name}.branch3x3_2a", 384, 384, 1, 3),
        (f"{name}.branch3x3_2b", 384, 384, 3, 1),
        (f"{name}.branch3x3dbl_1", cin, 448, 1, 1),
        (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
        (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3),
        (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
        (f"{name}.branch_pool", cin, 192, 1, 1),
    ]


FID_INCEPTION_CONVS = [
    ("Conv2d_1a_3x3", 3, 32, 3, 3),
    ("Conv2d_2a_3x3", 32, 32, 3, 3),
    ("Conv2d_2b_3x3", 32, 64, 3, 3),
    ("Conv2d_3b_1x1", 64, 80, 1, 1),
    ("Conv2d_4a_3x3", 80, 192, 3, 3),
    *_inception_a("Mixed_5b", 192, 32),
    *_inception_a("Mixed_5c", 256, 64),
    *_inception_a("Mixed_5d", 288, 64),
    ("Mixed_6a.branch3x3", 288, 384, 3, 3),
    ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
    ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3),
    ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3),
    *_inception_c("Mixed_6b", 128),
    *_inception_c("Mixed_6c", 160),
    *_inception_c("Mixed_6d", 160),
    *_inception_c("Mixed_6e", 192),
    ("Mixed_7a.branch3x3_1", 768, 192, 1, 1),
    ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
    ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1),
    ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
    ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
    ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3),
    *_inception_e("Mixed_7b", 1280),
    *_inception_e("Mixed_7c", 2048),
]


def expected_inception_state() -> dict[str, tuple[int, ...]]:
    """pt_inception-2015-12-05-6726825d.pth: every BasicConv2d has conv (no bias) + bn; fc has 1008 classes."""
    expected = {}
    for name, cin, cout, kh, kw in FID_INCEPTION_CONVS:
        expected[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{name}.bn.{buffer}"] = (cout,)
    expected["fc.weight"], expected["fc.bias"] = (1008, 2048), (1008,)
    return expected


SQUEEZENET_FIRES = {
    3: (64, 16, 64, 64),
    4: (128, 16, 64, 64),
    6: (128, 32, 128, 128),
    7: (256, 32, 128, 128),
    9: (256, 48, 192, 192),
    10: (384, 48, 192, 192),
    11: (384, 64, 256, 256),
    12: (512, 64, 256, 256),
}


def expected_squeezenet_features() -> dict[str, tuple[int, ...]]:
    """squeezenet1_1-b8a52dc0.pth without its classifier: conv at features.0 and fire modules."""
    expected = {"features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,)}
    for index, (cin, squeeze, e1, e3) in SQUEEZENET_FIRES.items():
        prefix = f"features.{index}"
        expected |= {
            f"{prefix}.squeeze.weight": (squeeze, cin, 1, 1),
            f"{prefix}.squeeze.bias": (squeeze,),
            f"{prefix}.expand1x1.weight": (e1, squeeze, 1, 1),
            f"{prefix}.expand1x1.bias": (e1,),
            f"{prefix}.expand3x3.weight": (e3, squeeze, 3, 3),
            f"{prefix}.expand3x3.bias": (e3,),
        }
    return expected


EXPECTED_LPIPS_LINEAR = {
    f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate((64, 128, 256, 384, 384, 512, 512))
}


def _shapes(module, skip=("num_batches_tracked",)):
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith(skip)}


# -- Inception --------------------------------------------------------------------------------------------------


def test_fid_inception_has_the_published_names_and_shapes():
    network = FIDInceptionV3()
    assert _shapes(network) == expected_inception_state()
    assert len(FID_INCEPTION_CONVS) == 94


def test_fid_inception_runs_on_299_and_other_sizes():
    torch.manual_seed(0)
    network = FIDInceptionV3().eval()
    with torch.no_grad():
        features = network(torch.rand(2, 3, 299, 299))
        other = network(torch.rand(1, 3, 256, 192))
    assert features.shape == (2, 2048) and other.shape == (1, 2048)
    assert torch.isfinite(features).all()
    assert (features >= 0).all()  # average of ReLU outputs


def test_fid_inception_loads_a_published_style_file(tmp_path):
    torch.manual_seed(0)
    source = FIDInceptionV3()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}  # older files
    torch.save(state, tmp_path / INCEPTION_FILE)
    loaded = load_fid_inception(tmp_path / INCEPTION_FILE)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.Mixed_7c.branch_pool.conv.weight, source.Mixed_7c.branch_pool.conv.weight)
    torch.testing.assert_close(loaded.Conv2d_1a_3x3.bn.running_var, source.Conv2d_1a_3x3.bn.running_var)


def test_wrong_or_unsafe_weight_files_are_one_line_errors(tmp_path):
    state = dict(FIDInceptionV3().state_dict())
    weight = state.pop("Mixed_6b.branch7x7_2.conv.weight")
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(LeffaError, match=r"missing.pth: not the FID Inception .*missing Mixed_6b.branch7x7_2"):
        load_fid_inception(tmp_path / "missing.pth")
    state["Mixed_6b.branch7x7_2.conv.weight"] = weight
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet Inception, not the FID one
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(LeffaError, match=r"fc.weight has shape \(1000, 2048\)"):
        load_fid_inception(tmp_path / "shape.pth")
    torch.save({"network": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a whole module: refused (weights_only)
    with pytest.raises(LeffaError, match="pickled.pth: not a loadable"):
        load_fid_inception(tmp_path / "pickled.pth")
    with pytest.raises(LeffaError, match="weights file not found"):
        load_fid_inception(tmp_path / "absent.pth")


# -- LPIPS ------------------------------------------------------------------------------------------------------


def test_lpips_has_the_published_names_and_shapes():
    network = LPIPSSqueeze()
    assert _shapes(network.backbone) == expected_squeezenet_features()
    assert _shapes(network.linear) == EXPECTED_LPIPS_LINEAR


def test_lpips_runs_on_64x64():
    torch.manual_seed(0)
    network = LPIPSSqueeze().eval()
    with torch.no_grad():
        taps = network.backbone(torch.rand(1, 3, 64, 64))
        distance = network(torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 64, 64) * 2 - 1)
    assert [t.shape[1] for t in taps] == [64, 128, 256, 384, 384, 512, 512]
    assert [t.shape[-1] for t in taps] == [31, 15, 7, 3, 3, 3, 3]
    assert distance.shape == (3,) and torch.isfinite(distance).all()


def _write_lpips_files(folder, network):
    backbone = dict(network.backbone.state_dict())
    backbone["classifier.1.weight"] = torch.zeros(1000, 512, 1, 1)  # published file carries the classifier too
    backbone["classifier.1.bias"] = torch.zeros(1000)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(backbone, folder / SQUEEZENET_FILE)
    torch.save(network.linear.state_dict(), folder / "squeeze.pth")


def test_lpips_loads_published_style_files_and_metric_networks_from_a_folder(tmp_path):
    torch.manual_seed(1)
    source = LPIPSSqueeze()
    _write_lpips_files(tmp_path / "lpips", source)
    loaded = load_lpips(tmp_path / "lpips" / SQUEEZENET_FILE, tmp_path / "lpips" / "squeeze.pth")
    torch.testing.assert_close(loaded.linear.lin6.model[1].weight, source.linear.lin6.model[1].weight)
    x, y = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, y), source.eval()(x, y))
    networks = load_metric_networks(["lpips", "ssim"], lpips=tmp_path / "lpips")
    assert networks.inception is None and networks.lpips is not None
    torch.testing.assert_close(networks.lpips.linear.lin6.model[1].weight, source.linear.lin6.model[1].weight)


def test_lpips_file_alone_takes_torchmetrics_linear_layers(tmp_path):
    """--lpips FILE: the SqueezeNet file; the linear layers are the ones torchmetrics ships in its package."""
    torch.manual_seed(1)
    _write_lpips_files(tmp_path / "lpips", LPIPSSqueeze())
    networks = load_metric_networks(["lpips"], lpips=tmp_path / "lpips" / SQUEEZENET_FILE)
    packaged = torch.load(packaged_lpips_linear(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(networks.lpips.linear.lin3.model[1].weight, packaged["lin3.model.1.weight"])


def test_metric_weights_offline_come_from_torch_hub_cache_or_fail_in_one_line(tmp_path, monkeypatch):
    """Offline, the published files are read from torch's hub cache (where pytorch-fid and torchvision keep them);
    an absent one fails at once, naming the URL, the folder and the option."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(LeffaError) as error:
        load_metric_networks(["lpips"], offline=True)
    message = str(error.value)
    assert "\n" not in message and "--offline was given" in message
    assert SQUEEZENET_URL in message and str(checkpoints) in message and "--lpips FILE" in message
    with pytest.raises(LeffaError, match=r"pt_inception-2015-12-05-6726825d.pth .*--inception FILE"):
        load_metric_networks(["fid"], offline=True)
    torch.manual_seed(2)
    source = LPIPSSqueeze()
    _write_lpips_files(checkpoints, source)
    networks = load_metric_networks(["lpips"], offline=True)
    torch.testing.assert_close(networks.lpips.backbone.features[0].weight, source.backbone.features[0].weight)


def test_metric_weights_download_from_their_url_once(tmp_path, monkeypatch):
    """A reachable URL is downloaded into torch's hub cache (hash-checked), then read from there."""
    import hashlib
    import http.server
    import threading

    from leffa.hub import download_url

    torch.manual_seed(3)
    _write_lpips_files(tmp_path / "served", LPIPSSqueeze())
    data = (tmp_path / "served" / SQUEEZENET_FILE).read_bytes()
    served = tmp_path / "served" / f"squeezenet1_1-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (tmp_path / "served" / SQUEEZENET_FILE).rename(served)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "served"), **kwargs)

        def log_message(self, *args):
            requests.append(args)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{served.name}"
        path = download_url(url, tmp_path / "cache", sha256_prefix=served.stem.rsplit("-", 1)[-1])
        assert path == tmp_path / "cache" / served.name and path.read_bytes() == data
        count = len(requests)
        assert download_url(url, tmp_path / "cache", offline=True) == path and len(requests) == count
        with pytest.raises(LeffaError, match="download failed"):
            download_url(url.replace(".pth", "-x.pth"), tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
