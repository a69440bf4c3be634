"""Score parity of leffa's metric networks with the reference implementations, on weight files in the canonical
formats (random weights: the real files cannot be downloaded here; the LPIPS linear layers are torchmetrics' real
packaged file).

- LPIPS: torchmetrics' own ``_LPIPS`` (scaling, unit normalisation, its packaged ``squeeze.pth``, spatial mean),
  with torchvision's SqueezeNet 1.1 ``features`` (transcribed below, since torchvision cannot be imported beside
  this torch) loaded from the same torchvision-format file leffa loads.
- FID Inception: torch-fidelity's ``FeatureExtractorInceptionV3`` (the network torchmetrics' FID uses by default),
  when ``$TORCH_FIDELITY_SRC`` points at its unpacked wheel (see ``_torch_fidelity_inception``).
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from leffa.metrics.inception import FIDInceptionV3, load_fid_inception
from leffa.metrics.scores import load_metric_networks
from leffa.metrics.weights import SQUEEZENET_FILE, packaged_lpips_linear


class _TorchvisionFire(nn.Module):
    """torchvision.models.squeezenet.Fire, as published."""

    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


def _torchvision_squeezenet1_1_features() -> nn.Sequential:
    """torchvision's ``squeezenet1_1().features`` (version 1_1 branch of ``SqueezeNet.__init__``)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True), _TorchvisionFire(64, 16, 64, 64),
        _TorchvisionFire(128, 16, 64, 64), nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        _TorchvisionFire(128, 32, 128, 128), _TorchvisionFire(256, 32, 128, 128),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True), _TorchvisionFire(256, 48, 192, 192),
        _TorchvisionFire(384, 48, 192, 192), _TorchvisionFire(384, 64, 256, 256), _TorchvisionFire(512, 64, 256, 256),
    )  # fmt: skip


def test_lpips_equals_torchmetrics_lpips(tmp_path, monkeypatch):
    import torchmetrics.functional.image.lpips as tm_lpips

    torch.manual_seed(0)
    features = _torchvision_squeezenet1_1_features()
    for module in features.modules():  # weights of a trained net's scale, so the taps are not all zero
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
            nn.init.uniform_(module.bias, -0.1, 0.1)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.1.weight"], state["classifier.1.bias"] = torch.randn(1000, 512, 1, 1), torch.randn(1000)
    torch.save(state, tmp_path / SQUEEZENET_FILE)  # torchvision's published layout, classifier included

    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: features)
    reference = tm_lpips._LPIPS(pretrained=True, net="squeeze").eval()  # its packaged squeeze.pth
    ours = load_metric_networks(["lpips"], lpips=tmp_path / SQUEEZENET_FILE).lpips
    assert packaged_lpips_linear().name == "squeeze.pth"

    x, y = torch.rand(3, 3, 96, 64) * 2 - 1, torch.rand(3, 3, 96, 64) * 2 - 1
    with torch.no_grad():
        expected = reference(x, y).flatten()
        got = ours(x, y)
    assert expected.abs().min() > 1e-3  # a real distance, not zeros
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # identical images: distance zero in both
        assert ours(x, x).abs().max() < 1e-6


def _torch_fidelity_inception():
    """torch-fidelity's FeatureExtractorInceptionV3 from the source folder ``$TORCH_FIDELITY_SRC`` (holding
    ``torch_fidelity/``), loaded without its package ``__init__``, which imports torchvision. It is not a test
    dependency: installing torch-fidelity makes torchmetrics import it, and so torchvision, which fails here."""
    import os
    from pathlib import Path

    source = Path(os.environ.get("TORCH_FIDELITY_SRC", "")) / "torch_fidelity"
    if not (source / "feature_extractor_inceptionv3.py").is_file():
        pytest.skip("set TORCH_FIDELITY_SRC to an unpacked torch-fidelity wheel to run this parity test")
    if "torch_fidelity" not in sys.modules:
        package = types.ModuleType("torch_fidelity")
        package.__path__ = [str(source)]
        sys.modules["torch_fidelity"] = package
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


def test_fid_inception_equals_torch_fidelity_inception(tmp_path):
    extractor = _torch_fidelity_inception()
    torch.manual_seed(0)
    source = FIDInceptionV3()
    for module in source.modules():  # random weights of a plausible scale (the published file cannot be fetched)
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")  # the published key layout

    reference = extractor(
        "inception-v3-compat",
        ["2048"],
        feature_extractor_weights_path=str(tmp_path / "pt_inception-2015-12-05-6726825d.pth"),
    )  # loads strictly: same names and shapes
    ours = load_fid_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    with torch.no_grad():
        (expected,) = reference(images)
        got = ours.features((images.float() - 128) / 128)  # torch-fidelity's scaling, at the network's own size
    assert expected.shape == got.shape == (2, 2048)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
