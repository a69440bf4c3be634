"""Training and validation data read from the public datasets' on-disk layouts.

Every dataset yields dicts of tensors in one shape, whatever the task:

- ``image``     (3, H, W) in [-1, 1]: the target (the person for try-on, the person in the new pose for pose transfer)
- ``reference`` (3, H, W) in [-1, 1]: the garment (try-on) or the source person (pose transfer)
- ``mask``      (1, H, W) in {0, 1}: 1 = region to regenerate (all ones for pose transfer)
- ``densepose`` (3, H, W) in [-1, 1]: the target's DensePose condition
- ``name``      str: the target's file stem, for validation dumps

Layouts (only these files are read; anything else in the folders is ignored):

- VITON-HD: ``DIR/{train,test}/{image,cloth,image-densepose}/NAME.jpg``, ``DIR/{split}/agnostic-mask/NAME_mask.png``,
  ``DIR/{split}_pairs.txt`` with lines ``person.jpg cloth.jpg``.
- DressCode: ``DIR/{upper_body,lower_body,dresses}/images/ID_0.jpg`` (person) and ``ID_1.jpg`` (garment),
  ``dense/ID_5.png`` (DensePose part index 0..24), ``label_maps/ID_4.png`` (human parsing); pairs from
  ``DIR/CATEGORY/{split}_pairs[_paired|_unpaired].txt`` or ``DIR/{split}_pairs[...].txt``.
- DeepFashion pose pairs: ``DIR/{train,test}/image/NAME.jpg``, ``DIR/{split}/densepose/NAME.png`` (IUV),
  ``DIR/{split}_pairs.csv`` with header ``from,to``.

Augmentation (training only): a horizontal flip of every tensor together, and a small random affine (scale and
shift) of the target-frame tensors (image, mask, DensePose) together. Each sample's randomness comes from
``(seed, epoch, index)``, so a resumed run sees exactly the samples an uninterrupted one would.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from leffa import images
from leffa.errors import LeffaError

Split = Literal["train", "test"]
Mode = Literal["paired", "unpaired"]
DRESSCODE_CATEGORIES = ("upper_body", "lower_body", "dresses")

# DressCode parsing labels (aimagelab/dress-code): 4 upper clothes, 5 skirt, 6 pants, 7 dress, 8 belt,
# 12/13 legs, 14/15 arms. The region to regenerate per category: the garment class(es) and the limbs it may cover.
DRESSCODE_MASK_LABELS = {
    "upper_body": (4, 14, 15),
    "lower_body": (5, 6, 8, 12, 13),
    "dresses": (4, 5, 6, 7, 8, 12, 13, 14, 15),
}


# -- reading files -------------------------------------------------------------------------------------------------


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise LeffaError(f"{path}: {what} not found")
    return path


def load_rgb(path: Path, size: tuple[int, int], what: str = "image") -> torch.Tensor:
    """A picture resized to ``size`` = (H, W) as (3, H, W) in [-1, 1] (``leffa.images.rgb_tensor``, as try-on)."""
    return images.rgb_tensor(images.read_rgb(path, what), size)


def load_densepose(path: Path, size: tuple[int, int], what: str = "VITON-HD DensePose") -> torch.Tensor:
    """A DensePose rendering (try-on) as (3, H, W) in [-1, 1] (``leffa.images.densepose_tensor``, as try-on)."""
    return images.densepose_tensor(images.open_image(path, what), size, "rgb")


def load_labels(path: Path, size: tuple[int, int], what: str) -> torch.Tensor:
    """A single-channel label image (nearest resize) as an integer (H, W) tensor."""
    return torch.from_numpy(images.label_array(images.open_image(path, what), size))


def load_mask(path: Path, size: tuple[int, int], what: str = "mask") -> torch.Tensor:
    """A mask image as (1, H, W) in {0, 1} (``leffa.images.mask_tensor``: Lanczos, then ``>= 0.5``, as try-on)."""
    return images.mask_tensor(images.open_image(path, what), size)


def encode_part_index(parts: torch.Tensor) -> torch.Tensor:
    """DensePose part indices (H, W) in 0..24 -> a 3-channel image in [-1, 1], distinct per part.

    Channel 0 carries the index itself (i / 24), channels 1 and 2 its position in a 5 x 5 table ((i mod 5) / 4,
    (i // 5) / 4), so neighbouring parts differ in more than one channel; background (0) is black as in DensePose
    renderings. Used for DressCode, whose ``dense/*_5.png`` stores the part index only.
    """
    parts = parts.clamp(0, 24).float()
    channels = torch.stack([parts / 24, torch.remainder(parts, 5) / 4, torch.div(parts, 5, rounding_mode="floor") / 4])
    return channels * 2 - 1


def read_pairs_txt(path: Path) -> list[list[str]]:
    """Whitespace-separated lines of a pairs file (blank lines skipped)."""
    _require(path, "pairs file")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    for number, row in enumerate(rows, 1):
        if len(row) < 2:
            raise LeffaError(f"{path}:{number}: expected 'person.jpg garment.jpg', got {' '.join(row)!r}")
    return rows


def read_pairs_csv(path: Path) -> list[tuple[str, str]]:
    """``from,to`` rows of a DeepFashion pairs file."""
    _require(path, "pairs file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"from", "to"} <= {name.strip() for name in reader.fieldnames}:
            raise LeffaError(f"{path}: expected a CSV header 'from,to'")
        rows = [({k.strip(): v for k, v in row.items()}) for row in reader]
    return [(row["from"].strip(), row["to"].strip()) for row in rows if row.get("from") and row.get("to")]


def _stem(name: str) -> str:
    return Path(name).stem if Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") else name


def has_unpaired_truth(split_folder: Path) -> bool:
    """Whether a try-on split folder holds ``leffa prep synth --unpaired``'s ground truth (``image-unpaired/``)."""
    return (Path(split_folder) / "image-unpaired").is_dir()


def unpaired_truth_files(split_folder: Path, person: str, garment: str) -> tuple[Path, Path]:
    """(image, garment region) of ``person`` really wearing ``garment``, as ``leffa prep synth --unpaired`` writes
    them: ``image-unpaired/PERSON__CLOTH.png`` and ``cloth-mask-unpaired/PERSON__CLOTH.png``."""
    name = f"{_stem(person)}__{_stem(garment)}"
    return split_folder / "image-unpaired" / f"{name}.png", split_folder / "cloth-mask-unpaired" / f"{name}.png"


# -- augmentation --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Horizontal flip probability and the largest relative scale change / shift of the random affine."""

    flip: float = 0.5
    affine: float = 0.05

    @property
    def enabled(self) -> bool:
        return self.flip > 0 or self.affine > 0


def _affine(tensor: torch.Tensor, theta: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    grid = F.affine_grid(theta[None], [1, *tensor.shape], align_corners=False)
    return F.grid_sample(tensor[None].float(), grid, mode=mode, padding_mode=padding, align_corners=False)[0]


def augment(sample: dict, augmentation: Augmentation, generator: torch.Generator) -> dict:
    """Flip every tensor together; apply one small affine to the target-frame tensors (image, mask, DensePose)."""
    draws = torch.rand(4, generator=generator)
    sample = dict(sample)
    if draws[0] < augmentation.flip:
        for key in ("image", "reference", "mask", "densepose"):
            sample[key] = sample[key].flip(-1)
    if augmentation.affine > 0:
        scale = 1.0 + (draws[1].item() * 2 - 1) * augmentation.affine
        shift_x = (draws[2].item() * 2 - 1) * augmentation.affine * 2  # grid units: 2 = the image width
        shift_y = (draws[3].item() * 2 - 1) * augmentation.affine * 2
        theta = torch.tensor([[1 / scale, 0.0, shift_x], [0.0, 1 / scale, shift_y]])
        sample["image"] = _affine(sample["image"], theta, "bilinear", "border")
        sample["densepose"] = _affine(sample["densepose"], theta, "nearest", "border")
        sample["mask"] = _affine(sample["mask"], theta, "nearest", "zeros")
    return sample


# -- datasets ------------------------------------------------------------------------------------------------------


class PairDataset(torch.utils.data.Dataset):
    """Common machinery: a list of entries, a loader per entry, deterministic per-(epoch, index) augmentation."""

    def __init__(self, size: tuple[int, int], augmentation: Augmentation | None = None, seed: int = 0):
        height, width = size
        self.size = (height, width)
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        self.entries: list = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, entry) -> dict:
        """One sample (a dict of tensors) for one of ``self.entries``; each layout defines its own."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        sample = self.load(self.entries[index])
        if self.augmentation is not None and self.augmentation.enabled:
            generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFF_FFFF_FFFF)
            sample = augment(sample, self.augmentation, generator)
        sample["index"] = torch.tensor(index)  # which entry: training's latent cache is keyed by it
        return sample

    def _check_not_empty(self, where: Path) -> None:
        if not self.entries:
            raise LeffaError(f"{where}: no samples listed")


class VitonHD(PairDataset):
    """VITON-HD try-on pairs. ``paired``: each person with their own garment (training, paired test);
    ``unpaired``: the garment named in the pairs file.

    ``unpaired_truth`` (training on synthetic data): also the unpaired pairs of ``leffa prep synth --unpaired``,
    each with the person really wearing the other garment (``image-unpaired/PERSON__CLOTH.png``) as the target.
    Paired data alone lets the agnostic mask, grown from the worn garment, tell the model the garment's shape;
    these samples keep the person's mask but change the garment, so the shape must come from the reference.
    Their entries are ``(person, garment, truth name)``; the others ``(person, garment)``.
    """

    def __init__(
        self,
        root,
        split: Split = "train",
        size=(1024, 768),
        mode: Mode = "paired",
        unpaired_truth: bool = False,
        **kwargs,
    ):
        super().__init__(size, **kwargs)
        self.root = Path(root)
        self.folder = self.root / split
        if not self.folder.is_dir():
            raise LeffaError(f"{self.folder}: VITON-HD split folder not found")
        pairs = self.root / f"{split}_pairs.txt"
        unpaired_pairs = self.root / f"{split}_pairs_unpaired.txt"
        if mode == "unpaired" and unpaired_pairs.is_file():
            pairs = unpaired_pairs  # `leffa prep synth --unpaired`
        for row in read_pairs_txt(pairs):
            person, garment = row[0], row[1]
            self.entries.append((person, person if mode == "paired" else garment))
        self._check_not_empty(pairs)
        if unpaired_truth:
            if not has_unpaired_truth(self.folder):
                raise LeffaError(
                    f"{self.folder}: no unpaired ground truth (image-unpaired/); draw the data with leffa prep synth --unpaired"
                )
            for row in read_pairs_txt(unpaired_pairs):
                self.entries.append((row[0], row[1], unpaired_truth_files(self.folder, row[0], row[1])[0].stem))

    def load(self, entry) -> dict:
        person, garment = entry[:2]
        stem = _stem(person)
        if len(entry) == 3:  # the person wearing the other garment; outside the mask it is the person's photo
            truth, _ = unpaired_truth_files(self.folder, person, garment)
            image = load_rgb(truth, self.size, "unpaired ground truth")
        else:
            image = load_rgb(self.folder / "image" / f"{stem}.jpg", self.size, "VITON-HD person image")
        return {
            "image": image,
            "reference": load_rgb(self.folder / "cloth" / f"{_stem(garment)}.jpg", self.size, "VITON-HD garment"),
            "mask": load_mask(self.folder / "agnostic-mask" / f"{stem}_mask.png", self.size, "VITON-HD agnostic mask"),
            "densepose": load_densepose(self.folder / "image-densepose" / f"{stem}.jpg", self.size),
            "name": stem,
        }


class DressCode(PairDataset):
    """DressCode try-on pairs; the mask is built from the parsing map for the pair's category."""

    def __init__(
        self,
        root,
        split: Split = "train",
        size=(1024, 768),
        mode: Mode = "paired",
        categories=DRESSCODE_CATEGORIES,
        **kwargs,
    ):
        super().__init__(size, **kwargs)
        self.root = Path(root)
        unknown = set(categories) - set(DRESSCODE_CATEGORIES)
        if unknown:
            raise LeffaError(f"unknown DressCode categories {sorted(unknown)}; choose from {DRESSCODE_CATEGORIES}")
        names = (f"{split}_pairs_{mode}.txt", f"{split}_pairs.txt")
        for category in categories:
            if not (self.root / category).is_dir():
                continue
            pairs = next((self.root / category / n for n in names if (self.root / category / n).is_file()), None)
            if pairs is not None:
                self.entries += [
                    (category, row[0], row[0] if mode == "paired" else row[1]) for row in read_pairs_txt(pairs)
                ]
        if not self.entries:
            pairs = next((self.root / n for n in names if (self.root / n).is_file()), None)
            if pairs is None:
                raise LeffaError(
                    f"{self.root}: no DressCode pairs file ({' or '.join(names)}) at the top or per category"
                )
            for row in read_pairs_txt(pairs):
                category = self._category(row)
                if category in categories:
                    self.entries.append((category, row[0], row[0] if mode == "paired" else row[1]))
            self._check_not_empty(pairs)

    def _category(self, row: list[str]) -> str:
        """A top-level pairs row's category: its third column (index or name), else the folder holding the image."""
        if len(row) >= 3:
            label = row[2]
            if label.isdigit() and int(label) < len(DRESSCODE_CATEGORIES):
                return DRESSCODE_CATEGORIES[int(label)]
            if label in DRESSCODE_CATEGORIES:
                return label
        for category in DRESSCODE_CATEGORIES:
            if (self.root / category / "images" / row[0]).is_file():
                return category
        raise LeffaError(f"{self.root}: {row[0]} is in none of {', '.join(DRESSCODE_CATEGORIES)}/images")

    def load(self, entry) -> dict:
        category, person, garment = entry
        folder = self.root / category
        ident = _stem(person).rsplit("_", 1)[0]
        garment_ident = _stem(garment).rsplit("_", 1)[0]
        labels = load_labels(folder / "label_maps" / f"{ident}_4.png", self.size, "DressCode label map")
        mask = torch.isin(labels, torch.tensor(DRESSCODE_MASK_LABELS[category])).float()[None]
        parts = load_labels(folder / "dense" / f"{ident}_5.png", self.size, "DressCode DensePose")
        return {
            "image": load_rgb(folder / "images" / f"{ident}_0.jpg", self.size, "DressCode person image"),
            "reference": load_rgb(folder / "images" / f"{garment_ident}_1.jpg", self.size, "DressCode garment"),
            "mask": dilate(mask, max(1, round(self.size[0] / 64))),
            "densepose": encode_part_index(parts),
            "name": ident,
        }


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow a (1, H, W) binary mask by ``radius`` pixels so the new garment's outline fits inside it."""
    return F.max_pool2d(mask[None], 2 * radius + 1, stride=1, padding=radius)[0]


class DeepFashionPose(PairDataset):
    """DeepFashion pose-transfer pairs: the ``from`` person is the reference, the ``to`` person the target."""

    def __init__(self, root, split: Split = "train", size=(512, 352), mode: Mode = "paired", **kwargs):
        super().__init__(size, **kwargs)
        self.root = Path(root)
        self.folder = self.root / split
        if not self.folder.is_dir():
            raise LeffaError(f"{self.folder}: DeepFashion split folder not found")
        self.entries = read_pairs_csv(self.root / f"{split}_pairs.csv")
        self._check_not_empty(self.root / f"{split}_pairs.csv")

    def load(self, entry) -> dict:
        source, target = (_stem(name) for name in entry)
        image = load_rgb(self.folder / "image" / f"{target}.jpg", self.size, "DeepFashion target image")
        return {
            "image": image,
            "reference": load_rgb(self.folder / "image" / f"{source}.jpg", self.size, "DeepFashion source image"),
            "mask": torch.ones(1, *self.size),
            # IUV decoded as upstream's pose transform (and ``leffa pose``) does: U, V / 255, part index / 24.
            "densepose": load_iuv(self.folder / "densepose" / f"{target}.png", self.size),
            "name": target,
        }


def load_iuv(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A DensePose IUV PNG (R = U, G = V, B = part index) in [-1, 1] (``leffa.images.iuv_tensor``, as ``leffa pose``)."""
    return images.iuv_tensor(images.open_image(path, "DeepFashion DensePose IUV"), size)


# -- choosing a dataset --------------------------------------------------------------------------------------------

DATASETS = {"vitonhd": VitonHD, "dresscode": DressCode, "deepfashion": DeepFashionPose}


def detect_layout(root: str | Path) -> str:
    """Which dataset layout ``root`` holds, from the files that identify each."""
    root = Path(root)
    if not root.is_dir():
        raise LeffaError(f"{root}: data folder not found")
    if any((root / f"{s}_pairs.csv").is_file() for s in ("train", "test")):
        return "deepfashion"
    if any((root / c / "images").is_dir() for c in DRESSCODE_CATEGORIES):
        return "dresscode"
    if any((root / f"{s}_pairs.txt").is_file() for s in ("train", "test")):
        return "vitonhd"
    raise LeffaError(
        f"{root}: not a VITON-HD (train_pairs.txt), DressCode (upper_body/images/) or "
        f"DeepFashion (train_pairs.csv) folder"
    )


def open_dataset(
    root,
    layout: str = "auto",
    split: Split = "train",
    size=(1024, 768),
    mode: Mode = "paired",
    augmentation: Augmentation | None = None,
    seed: int = 0,
    categories=DRESSCODE_CATEGORIES,
    unpaired_truth: bool = False,
) -> PairDataset:
    """The dataset for ``root`` (layout detected unless given); ``unpaired_truth``: see ``VitonHD``."""
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in DATASETS:
        raise LeffaError(f"unknown dataset layout {layout!r}; choose auto, {', '.join(DATASETS)}")
    if unpaired_truth and layout != "vitonhd":
        raise LeffaError(f"unpaired truth: only synthetic try-on data in the VITON-HD layout has it, not {layout}")
    kwargs: dict = {"categories": tuple(categories)} if layout == "dresscode" else {}
    if unpaired_truth:
        kwargs["unpaired_truth"] = True
    return DATASETS[layout](root, split=split, size=size, mode=mode, augmentation=augmentation, seed=seed, **kwargs)


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep names as a list."""
    return {
        key: [s[key] for s in samples] if isinstance(samples[0][key], str) else torch.stack([s[key] for s in samples])
        for key in samples[0]
    }


class ResumableSampler(torch.utils.data.Sampler):
    """Per-epoch shuffled indices, this process's share, starting ``skip`` micro-batches in (for resuming).

    The permutation depends only on ``(seed, epoch)``, so every process agrees on it and a resumed run continues
    exactly where the interrupted one stopped. Each epoch yields whole micro-batches only (the tail is dropped).
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0):
        if length < batch_size * world:
            raise LeffaError(
                f"{length} samples are fewer than one step's micro-batches ({batch_size} x {world} processes)"
            )
        self.length, self.batch_size, self.rank, self.world, self.seed = length, batch_size, rank, world, seed
        self.epoch = 0
        self.skip = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.length // (self.batch_size * self.world)

    def set_position(self, epoch: int, skip: int) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * self.batch_size

    def __iter__(self):
        order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        usable = self.batches_per_epoch * self.batch_size * self.world
        mine = order[:usable].view(-1, self.world, self.batch_size)[:, self.rank]  # (batches, batch_size)
        yield from mine[self.skip :].reshape(-1).tolist()
