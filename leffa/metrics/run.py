"""Generate a dataset split with a model, then score it: ``leffa eval --run``.

Inputs come from ``leffa.data.open_dataset`` (the layouts the trainer reads) at the model's working size; images are
sampled in batches with ``leffa.sampler.sample`` (the inference sampler, seeded per image) and written as PNG to
``OUT/pred/NAME.png``; the dataset's target images at the same size go to ``OUT/gt/NAME.png``, and the region to
regenerate to ``OUT/mask/NAME.png``. Synthetic try-on data (``leffa prep synth``) knows more: the garment region
(``cloth-mask/``) goes to ``OUT/region/NAME.png``, and for unpaired pairs the ground truth is the person really
wearing the other garment (``image-unpaired/``, ``cloth-mask-unpaired/``), so unpaired results are scored pixel for
pixel too. Both folders are then scored with ``leffa.metrics`` like any other pair of folders. Predictions already
on disk are kept, so an interrupted run resumes where it stopped; under ``torchrun`` / ``accelerate launch``
the split is shared out (``leffa.shard``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from leffa.atomic import save_image
from leffa.errors import LeffaError
from leffa.shard import Shard, count_done

if TYPE_CHECKING:
    from leffa.data import Mode, Split


def _to_pil(image: torch.Tensor):
    """(3, H, W) in [0, 1] -> PIL RGB."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def generate_split(
    model,
    data: str | Path,
    out_dir: str | Path,
    size: tuple[int, int],
    split: Split = "test",
    mode: Mode = "paired",
    layout: str = "auto",
    options=None,
    seed: int = 42,
    batch_size: int = 4,
    limit: int | None = None,
    progress=None,
    shard: Shard | None = None,
    settings: dict | None = None,
) -> tuple[Path, Path, int]:
    """Write predictions and ground truth of ``split`` under ``out_dir``; returns (pred dir, gt dir, newly made here).

    With a ``shard`` (``leffa.shard``) this process makes only its share and then waits for the other processes'.
    ``settings`` (``run_settings``: model and its weights' fingerprint, size, sampler, seed, pairing) are kept in
    ``OUT/run.json``; predictions already there are resumed only when they were made with the same settings.

    ``mode`` is the dataset's pairing (``paired``: each person with their own garment; ``unpaired``: the pairs
    file's garment). Each image's noise depends on ``seed`` alone, whatever the batch it falls in.
    """
    from leffa.data import open_dataset
    from leffa.pipeline import batches
    from leffa.sampler import SamplerOptions, UncondFeatureCache, sample

    options = options or SamplerOptions()
    shard = shard or Shard()
    if batch_size < 1:
        raise LeffaError(f"batch_size: must be at least 1, got {batch_size}", option="batch_size")
    dataset = open_dataset(data, layout=layout, split=split, size=size, mode=mode)
    out_dir = Path(out_dir)
    pred_dir, gt_dir = out_dir / "pred", out_dir / "gt"
    count = min(len(dataset), limit) if limit else len(dataset)
    names: list[str] = []
    for index in range(count):
        name = _entry_name(dataset, index)
        if name in names:
            raise LeffaError(f"{data}: two {split} entries produce the output name {name!r}")
        names.append(name)
    preds = [pred_dir / f"{name}.png" for name in names]
    if settings is not None:  # every process checks (all refuse together); the main one records
        _claim(out_dir, settings, any(path.is_file() for path in preds), record=shard.is_main)
    todo = [not (preds[index].is_file() and (gt_dir / f"{names[index]}.png").is_file()) for index in range(count)]
    # Batches are cut from the whole split and dealt out to the processes of a sharded run, so an image is sampled
    # in the same batch whatever the number of processes (and the same pixels come out).
    groups = [
        [index for index in group if todo[index]] for group in shard.take(list(batches(range(count), batch_size)))
    ]
    groups = [group for group in groups if group]
    made = sum(len(group) for group in groups)
    cache = UncondFeatureCache()
    report = (lambda finished: progress(finished, count)) if progress is not None and shard.is_main else None
    if report is not None:
        report(count_done(preds))
    for group in groups:
        items = [dataset[index] for index in group]
        stack = {key: torch.stack([item[key] for item in items]) for key in ("image", "reference", "mask", "densepose")}
        with torch.no_grad():
            images = sample(
                model,
                stack["image"],
                stack["reference"],
                stack["mask"],
                stack["densepose"],
                options,
                seed=seed,
                cache=cache,
            )
        for item, index, image in zip(items, group, images):
            name = names[index]
            truth, region = synthetic_truth(dataset, index, size)
            save_image(_to_pil((item["image"] if truth is None else truth) / 2 + 0.5), gt_dir / f"{name}.png")
            save_image(_mask_to_pil(item["mask"]), out_dir / "mask" / f"{name}.png")
            if region is not None:
                save_image(_mask_to_pil(region), out_dir / "region" / f"{name}.png")
            save_image(_to_pil(image), preds[index])  # last: a prediction on disk means the rest exist
        if report is not None:
            report(count_done(preds))
    shard.wait_for(preds, report)
    return pred_dir, gt_dir, made


def _mask_to_pil(mask: torch.Tensor):
    """(1, H, W) in {0, 1} -> PIL L (255 = inside)."""
    from PIL import Image

    return Image.fromarray((mask[0] > 0.5).to(torch.uint8).mul(255).cpu().numpy())


def unpaired_truth(data, split: str) -> bool:
    """Whether a dataset folder has unpaired ground truth (``leffa prep synth --unpaired``) for ``split``."""
    from leffa.data import has_unpaired_truth

    return data is not None and has_unpaired_truth(Path(data) / split)


def synthetic_truth(dataset, index: int, size: tuple[int, int]):
    """(ground-truth image (3, H, W) in [-1, 1] or None, garment region (1, H, W) or None) of a try-on entry.

    Paired: the region is ``cloth-mask/PERSON.png`` (the target is the dataset's image). Unpaired: the person
    wearing the other garment, ``image-unpaired/PERSON__CLOTH.png``, and its region, when the data has them
    (``leffa prep synth --unpaired``); None otherwise (a real dataset has no unpaired ground truth).
    """
    from leffa.data import VitonHD, load_mask, load_rgb, unpaired_truth_files

    if not isinstance(dataset, VitonHD):
        return None, None
    person, garment = (Path(part).stem for part in dataset.entries[index][:2])
    folder = dataset.folder
    if person == garment:
        region = folder / "cloth-mask" / f"{person}.png"
        return None, load_mask(region, size, "garment region") if region.is_file() else None
    image, region = unpaired_truth_files(folder, person, garment)
    if not image.is_file():
        return None, None
    truth = load_rgb(image, size, "unpaired ground truth")
    return truth, load_mask(region, size, "garment region") if region.is_file() else None


def _entry_name(dataset, index: int) -> str:
    """A unique output stem per entry: the target's stem, plus the reference's when they differ (unpaired try-on);
    pose pairs are ``TARGET__SOURCE`` as ``leffa prep synth`` names their flows."""
    from leffa.data import DeepFashionPose
    from leffa.pipeline import output_stem

    stems = [Path(part).stem for part in dataset.entries[index]]
    if isinstance(dataset, DeepFashionPose):
        source, target = stems
        return f"{target}__{source}"
    return output_stem(stems[-2], stems[-1])


def _claim(out_dir: Path, settings: dict, resuming: bool, record: bool = True) -> None:
    """Record ``settings`` in ``OUT/run.json``; refuse to resume predictions another run's settings made (a changed
    model file behind the same name included), which would otherwise be scored as this model's."""
    import json

    from leffa.atomic import atomic_path

    kept_file = out_dir / "run.json"
    wanted = json.loads(json.dumps(settings))  # as it reads back: tuples become lists
    if resuming and kept_file.is_file():
        try:
            kept = json.loads(kept_file.read_text())
        except (OSError, ValueError):
            kept = None
        if kept != wanted:
            changed = sorted(k for k in wanted.keys() | (kept or {}).keys() if (kept or {}).get(k) != wanted.get(k))
            raise LeffaError(
                f"{out_dir}: holds predictions made with other settings ({', '.join(changed)} differ); "
                "give another --out-dir, or delete that folder to start over"
            )
    if not record:
        return
    with atomic_path(kept_file) as path:
        Path(path).write_text(json.dumps(wanted, indent=2) + "\n")


def run_settings(model_source: str, size, options, seed: int, split: str, mode: str, weights: str = "") -> dict:
    """What produced the predictions (``weights``: ``leffa.integrity.weights_fingerprint``), kept in ``OUT/run.json``
    and stored in the result JSON beside the metric settings."""
    return {
        "model": model_source,
        "weights": weights,
        "size": list(size),
        "split": split,
        "pairing": mode,
        "seed": seed,
        "sampler": asdict(options),
    }
