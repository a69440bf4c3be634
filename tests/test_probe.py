"""One attention probe: training validation, ``eval --flow`` and ``viz-flow`` give identical flows for the same model,
inputs, seed and t (they all go through ``leffa.probe``)."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from PIL import Image
from test_train import tiny_config

import leffa.metrics.flow as metrics_flow
import leffa.viz.render as render
from leffa.checkpoint import load_model, save_model
from leffa.flow import flow_epe, upsample_flow
from leffa.probe import layer_flows, probe_flows, short_layer_name
from leffa.train.loop import Trainer
from leffa_cli.app import main

SIZE = (64, 48)


def _flow_dataset(root):
    """A VITON-HD-layout folder (train: 2 pairs, test: 1 pair) with a ground-truth flow, smooth images, a grey-edged
    mask (so the mask rule matters) and a DensePose rendering."""
    rng = np.random.default_rng(7)
    height, width = SIZE
    for split, names in (("test", ["s0"]), ("train", ["s0", "s1"])):
        folder = root / split
        for name in names:
            for kind in ("image", "cloth", "image-densepose"):
                (folder / kind).mkdir(parents=True, exist_ok=True)
                small = Image.fromarray(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8))
                small.resize((width, height), Image.BICUBIC).save(folder / kind / f"{name}.jpg", quality=95)
            mask = np.zeros(SIZE, np.uint8)
            mask[16:48, 8:40] = 255
            mask[16:48, 8] = 100
            (folder / "agnostic-mask").mkdir(exist_ok=True)
            Image.fromarray(mask).save(folder / "agnostic-mask" / f"{name}_mask.png")
            flow = (rng.random((height, width, 2)) * 2 - 1).astype(np.float32)
            flow[mask == 0] = np.nan
            (folder / "gt-flow").mkdir(exist_ok=True)
            np.save(folder / "gt-flow" / f"{name}.npy", flow)
        (root / f"{split}_pairs.txt").write_text("".join(f"{n}.jpg {n}.jpg\n" for n in names))
    return root


def test_training_validation_eval_flow_and_viz_flow_give_identical_flows(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    data = _flow_dataset(tmp_path / "data")
    config = tiny_config(data, tmp_path / "run", validate_every=1, seed=5)
    trainer = Trainer(config)
    timestep, seed = config.leffa_timestep_threshold // 2, config.seed
    layers = trainer.capture_layers
    assert layers and timestep == 250

    # 1. training validation
    training, _ = layer_flows(trainer.validation_attention(), SIZE)
    assert list(training) == layers

    model_path = save_model(trainer.model, tmp_path / "model.safetensors", dtype="fp32")
    model = load_model(model_path).eval()

    # 2. eval --flow (the library call the command makes), recording the probe's flows
    recorded = {}

    def recording_probe(*args, **kwargs):
        result = probe_flows(*args, **kwargs)
        recorded.update(result.flows)
        return result

    monkeypatch.setattr(metrics_flow, "probe_flows", recording_probe)
    result = metrics_flow.evaluate_flow(model, data, timestep=timestep, seed=seed, layers=layers)
    assert list(recorded) == layers

    # 3. viz-flow, through the command line, recording the flows it draws
    drawn = {}
    real_rows = render.flow_rows

    def recording_rows(reference, flows, **kwargs):
        drawn.update(flows)
        return real_rows(reference, flows, **kwargs)

    monkeypatch.setattr(render, "flow_rows", recording_rows)
    split = data / "test"
    argv = [
        "viz-flow",
        split / "image" / "s0.jpg",
        split / "cloth" / "s0.jpg",
        "--model",
        model_path,
        "--mask",
        split / "agnostic-mask" / "s0_mask.png",
        "--densepose",
        split / "image-densepose" / "s0.jpg",
        "--size",
        "64x48",
        "--t",
        str(timestep),
        "--seed",
        str(seed),
        "--layers",
        ",".join(layers),
        "--device",
        "cpu",
        "-o",
        tmp_path / "flow.png",
    ]
    try:
        main([str(arg) for arg in argv])
    except SystemExit as exit_:
        assert not exit_.code, capsys.readouterr().err
    assert list(drawn) == layers

    for name in layers:
        assert torch.equal(training[name], recorded[name]), name
        assert torch.equal(training[name], drawn[name]), name
    # and eval's numbers are the EPE of exactly those flows
    gt = torch.from_numpy(np.load(split / "gt-flow" / "s0.npy"))
    for name in layers:
        expected = flow_epe(upsample_flow(drawn[name], SIZE)[0], gt)
        assert result.per_image["s0"][short_layer_name(name)] == expected
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_probe_convention_posterior_means_and_the_mask_rule(tiny_model, monkeypatch):
    """The documented convention: posterior means for every latent (no sampling), ``person * (mask < 0.5)`` as the
    masked image (a grey 0.5 pixel is regenerated, a 0.4 one kept), the noise from the seed alone."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    person, garment = (torch.rand(1, 3, *SIZE, generator=generator) * 2 - 1 for _ in range(2))
    mask = torch.zeros(1, 1, *SIZE)
    mask[..., :32, :] = 0.5
    mask[..., 32:40, :] = 0.4
    calls = []
    encode = tiny_model.encode

    def recording_encode(images, generator=None, sample=True):
        calls.append((images.clone(), generator, sample))
        return encode(images, generator, sample)

    monkeypatch.setattr(tiny_model, "encode", recording_encode)
    first = probe_flows(tiny_model, person, garment, mask, timestep=100, seed=1)
    assert [(call[1], call[2]) for call in calls] == [(None, False)] * 3
    assert torch.equal(calls[0][0], person) and torch.equal(calls[2][0], garment)
    assert torch.equal(calls[1][0], person * (mask < 0.5))
    again = probe_flows(tiny_model, person, garment, mask, timestep=100, seed=1)
    other = probe_flows(tiny_model, person, garment, mask, timestep=100, seed=2)
    assert all(torch.equal(first.flows[n], again.flows[n]) for n in first.flows)
    assert any(not torch.equal(first.flows[n], other.flows[n]) for n in first.flows)
