"""Datasets read from the VITON-HD, DressCode and DeepFashion layouts; augmentation; resumable sampling.

The ``make_*`` writers build tiny folders in exactly those layouts from random images; test_train.py reuses them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leffa.data import (
    Augmentation,
    DressCode,
    ResumableSampler,
    VitonHD,
    augment,
    collate,
    detect_layout,
    encode_part_index,
    open_dataset,
)
from leffa.errors import LeffaError


def _rgb(path: Path, rng, size=(64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _iuv(path: Path, rng, size=(64, 48)) -> None:
    """A DensePose IUV PNG: R = U, G = V (0..255), B = part index (0..24)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    uv = rng.integers(0, 256, (*size, 2), dtype=np.uint8)
    parts = rng.integers(0, 25, (*size, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([uv, parts], axis=-1)).save(path)


def _gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def make_vitonhd(root: Path, count: int = 4, size=(64, 48), seed: int = 0) -> Path:
    """A VITON-HD-layout folder of random images (train and test splits)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        names = [f"{split[:2]}{i:04d}_00" for i in range(count)]
        for name in names:
            for folder in ("image", "cloth", "image-densepose"):
                _rgb(root / split / folder / f"{name}.jpg", rng, size)
            mask = np.zeros(size)
            mask[size[0] // 4 : 3 * size[0] // 4, size[1] // 4 : 3 * size[1] // 4] = 255
            _gray(root / split / "agnostic-mask" / f"{name}_mask.png", mask)
        pairs = [f"{a}.jpg {b}.jpg" for a, b in zip(names, names[1:] + names[:1])]
        (root / f"{split}_pairs.txt").write_text("\n".join(pairs) + "\n")
    return root


def make_dresscode(root: Path, per_category: int = 2, size=(64, 48), top_level_pairs: bool = False) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for index, category in enumerate(("upper_body", "lower_body", "dresses")):
        idents = [f"{index}{i:05d}" for i in range(per_category)]
        for ident in idents:
            _rgb(root / category / "images" / f"{ident}_0.jpg", rng, size)
            _rgb(root / category / "images" / f"{ident}_1.jpg", rng, size)
            labels = np.zeros(size)
            labels[10:30, 10:30] = 4  # upper clothes
            labels[35:60, 10:30] = 6  # pants
            _gray(root / category / "label_maps" / f"{ident}_4.png", labels)
            _gray(root / category / "dense" / f"{ident}_5.png", rng.integers(0, 25, size))
        lines = [f"{i}_0.jpg {i}_1.jpg" for i in idents]
        if top_level_pairs:
            rows += [f"{line} {index}" for line in lines]
        else:
            (root / category / "train_pairs.txt").write_text("\n".join(lines) + "\n")
    if top_level_pairs:
        (root / "train_pairs.txt").write_text("\n".join(rows) + "\n")
    return root


def make_deepfashion(root: Path, count: int = 3, size=(64, 48)) -> Path:
    rng = np.random.default_rng(2)
    names = [f"MEN-person{i}" for i in range(count)]
    for name in names:
        _rgb(root / "train" / "image" / f"{name}.jpg", rng, size)
        _iuv(root / "train" / "densepose" / f"{name}.png", rng, size)
    rows = ["from,to"] + [f"{a}.jpg,{b}.jpg" for a, b in zip(names, names[1:] + names[:1])]
    (root / "train_pairs.csv").write_text("\n".join(rows) + "\n")
    return root


def _check_sample(sample: dict, size=(64, 48)) -> None:
    for key in ("image", "reference", "densepose"):
        assert sample[key].shape == (3, *size), key
        assert sample[key].min() >= -1 and sample[key].max() <= 1, key
    assert sample["mask"].shape == (1, *size)
    assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}


def test_vitonhd_paired_and_unpaired(tmp_path):
    root = make_vitonhd(tmp_path / "vhd")
    assert detect_layout(root) == "vitonhd"
    paired = VitonHD(root, "train", size=(64, 48))
    unpaired = VitonHD(root, "train", size=(64, 48), mode="unpaired")
    assert len(paired) == 4
    sample = paired[0]
    _check_sample(sample)
    assert sample["mask"].sum() == 32 * 24  # the agnostic mask's rectangle
    assert sample["name"] == "tr0000_00"
    assert torch.equal(unpaired[0]["image"], sample["image"])
    assert torch.equal(unpaired[0]["reference"], paired[1]["reference"])  # the garment named in the pairs file
    assert not torch.equal(unpaired[0]["reference"], sample["reference"])


def test_missing_files_raise_clear_errors(tmp_path):
    root = make_vitonhd(tmp_path / "vhd")
    (root / "train" / "agnostic-mask" / "tr0001_00_mask.png").unlink()
    dataset = VitonHD(root, "train", size=(64, 48))
    with pytest.raises(LeffaError, match=r"tr0001_00_mask\.png: VITON-HD agnostic mask not found"):
        dataset[1]
    (root / "train_pairs.txt").unlink()
    with pytest.raises(LeffaError, match=r"train_pairs\.txt: pairs file not found"):
        VitonHD(root, "train")
    with pytest.raises(LeffaError, match="not a VITON-HD"):
        detect_layout(tmp_path)
    with pytest.raises(LeffaError, match="data folder not found"):
        detect_layout(tmp_path / "nowhere")


@pytest.mark.parametrize("top_level_pairs", [False, True])
def test_dresscode_masks_follow_the_category(tmp_path, top_level_pairs):
    root = make_dresscode(tmp_path / "dc", top_level_pairs=top_level_pairs)
    assert detect_layout(root) == "dresscode"
    dataset = DressCode(root, "train", size=(64, 48))
    assert len(dataset) == 6
    by_category = {entry[0]: dataset[i] for i, entry in enumerate(dataset.entries)}
    for sample in by_category.values():
        _check_sample(sample)
    upper, lower, dress = (by_category[c]["mask"][0] for c in ("upper_body", "lower_body", "dresses"))
    assert upper[20, 20] == 1 and upper[50, 20] == 0  # shirt region, not the pants
    assert lower[20, 20] == 0 and lower[50, 20] == 1
    assert dress[20, 20] == 1 and dress[50, 20] == 1
    assert upper[5, 5] == 0  # background stays
    only_upper = DressCode(root, "train", size=(64, 48), categories=["upper_body"])
    assert len(only_upper) == 2


def test_part_index_encoding_is_distinct_and_in_range():
    codes = encode_part_index(torch.arange(25).view(5, 5)).reshape(3, 25).T
    assert codes.min() >= -1 and codes.max() <= 1
    assert len({tuple(code.tolist()) for code in codes}) == 25
    assert codes[0].tolist() == [-1.0, -1.0, -1.0]  # background is black


def test_deepfashion_pairs(tmp_path):
    root = make_deepfashion(tmp_path / "df")
    assert detect_layout(root) == "deepfashion"
    dataset = open_dataset(root, size=(64, 48))
    sample = dataset[0]
    _check_sample(sample)
    assert sample["mask"].min() == 1  # pose transfer regenerates everything
    assert sample["name"] == "MEN-person1"
    assert torch.equal(sample["reference"], dataset[2]["image"])  # person0 is the source of row 0, target of row 2


def test_unpaired_truth_is_refused_for_layouts_without_it(tmp_path):
    root = make_deepfashion(tmp_path / "df")
    with pytest.raises(LeffaError, match="unpaired truth: only synthetic try-on data .* not deepfashion"):
        open_dataset(root, size=(64, 48), unpaired_truth=True)


def test_flip_and_affine_move_every_condition_together():
    image = torch.linspace(-1, 1, 48).expand(3, 64, 48).clone()
    mask = torch.zeros(1, 64, 48)
    mask[:, :, :10] = 1
    sample = {"image": image, "reference": image.clone(), "mask": mask, "densepose": image.clone(), "name": "x"}
    flipped = augment(sample, Augmentation(flip=1.0, affine=0.0), torch.Generator().manual_seed(0))
    for key in ("image", "reference", "densepose", "mask"):
        assert torch.equal(flipped[key], sample[key].flip(-1)), key
    moved = augment(sample, Augmentation(flip=0.0, affine=0.1), torch.Generator().manual_seed(3))
    assert not torch.equal(moved["image"], image)
    # the mask edge moved exactly as far as the image's gradient: the column where the mask ends shows the same value
    edge = int(moved["mask"][0, 32].sum().item())
    original_value_at_edge = image[0, 32, 9]
    assert edge > 0 and (moved["image"][0, 32, :edge] <= original_value_at_edge + 0.05).all()
    assert torch.equal(moved["reference"], sample["reference"])  # the reference lives in its own frame


def test_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path):
    root = make_vitonhd(tmp_path / "vhd")
    dataset = VitonHD(root, "train", size=(64, 48), augmentation=Augmentation(), seed=7)
    first = dataset[1]["image"]
    assert torch.equal(dataset[1]["image"], first)
    changed = [torch.equal(first, (dataset.set_epoch(e), dataset[1]["image"])[1]) for e in range(1, 6)]
    assert not all(changed)


def test_resumable_sampler_shards_and_resumes():
    full = [list(ResumableSampler(10, 2, rank, 2, seed=3)) for rank in (0, 1)]
    assert all(len(indices) == 4 for indices in full)  # 10 // (2 x 2) = 2 batches each, tail dropped
    assert not set(full[0]) & set(full[1])
    resumed = ResumableSampler(10, 2, 0, 2, seed=3)
    resumed.set_position(0, 1)
    assert list(resumed) == full[0][2:]
    resumed.set_position(1, 0)
    assert list(resumed) != full[0]
    with pytest.raises(LeffaError, match="fewer than one step"):
        ResumableSampler(3, 2, 0, 2)


def test_collate_stacks_tensors_and_keeps_names(tmp_path):
    dataset = VitonHD(make_vitonhd(tmp_path / "vhd"), "test", size=(64, 48))
    batch = collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, 64, 48) and batch["name"] == ["te0000_00", "te0001_00"]
