"""From files to finished images: load and check inputs, prepare the conditions, sample, repaint, paste back.

Input rules (checked before any model is loaded, so a bad input writes nothing):
- Photos and garments must be readable images, at least ``MIN_SIDE`` pixels a side and at most ``MAX_PIXELS``.
  RGBA / LA / transparent palette images are composited over white and greyscale is expanded to RGB; each such
  conversion is reported as a note (garments are often transparent PNGs, so refusing them would be unfriendly).
- Masks (white = region to regenerate) and DensePose images must have exactly the person photo's size; anything
  else is an error, since a resized mask would no longer line up with the body.

Geometry: with ``crop`` (the default) the largest centred box of the working aspect ratio (3:4 for 1024x768) is cut
from the person photo (and its mask and DensePose), generated at the working size, and pasted back into the
original photo at its original size; the garment (or pose reference) is padded with white to that aspect instead,
so no part of it is lost. Without ``crop`` every image is resized to the working size as upstream does, and the
result is resized back to the photo's size.

Repaint (upstream's, optional): outside a feathered mask (Gaussian blur with radius ``h // 100`` made odd) the
result takes the original pixels. We apply it at the photo's own resolution, so those pixels stay exact.

Reading, converting, resizing and mask binarisation are ``leffa.images``'s (the same rules as training's data
loading: pictures Lanczos, masks Lanczos then ``>= 0.5``, IUV nearest). An all-black mask is reported as a note.

Conditions come from ``--mask`` / ``--densepose`` files, or from plugins registered under the entry-point group
``leffa.conditions`` (names ``mask``: ``f(person: PIL.Image, garment_type: str, offline: bool, mask_style: str,
style: str) -> PIL.Image``, ``mask_style`` being ``upstream`` (the authors' mask rules) or ``tight`` and ``style``
the model's ``hd`` (VITON-HD) or ``dc`` (DressCode); ``densepose``: ``f(person: PIL.Image, kind: "rgb" | "index" |
"iuv", offline: bool) -> PIL.Image``, ``rgb`` being the VITON-HD model's part rendering, ``index`` the DressCode
model's part indices); leffa's own are in ``leffa.automatic`` (human parsing + OpenPose masks, DensePose without
detectron2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter

from leffa import images
from leffa.atomic import ensure_writable_destination, save_image
from leffa.errors import LeffaError
from leffa.images import MIN_SIDE, Size, open_image, read_rgb, to_grey, to_rgb
from leffa.sampler import SamplerOptions, UncondFeatureCache, decode_images, denoise, encode_conditions
from leffa.sampler import seeded_generators

MAX_PIXELS = images.MAX_PIXELS
GARMENT_TYPES = ("upper_body", "lower_body", "dresses")
CONDITIONS_GROUP = "leffa.conditions"


# -- reading and checking files -----------------------------------------------------------------------------------


def load_rgb(path: str | Path | Image.Image, role: str, notes: list[str]) -> Image.Image:
    """A photo or garment as RGB (``leffa.images``: transparency over white and greyscale expanded, with notes)."""
    return read_rgb(path, role, notes, min_side=MIN_SIDE)


def load_condition(path: str | Path | Image.Image, role: str, size: Size, mode: str) -> Image.Image:
    """A mask (``L``) or DensePose (``RGB``) image that must match the person photo's ``size`` = (H, W) exactly."""
    image = open_image(path, role)
    if image.size != (size[1], size[0]):
        raise LeffaError(
            f"{path}: {role} is {image.size[0]}x{image.size[1]} but the person photo is {size[1]}x{size[0]}; "
            "they must be the same size"
        )
    return to_grey(image) if mode == "L" else to_rgb(image, alpha="ignore")


def check_size(size: Size, multiple: int = 8) -> Size:
    """The working size rule: both sides at least ``MIN_SIDE`` and multiples of ``multiple`` (the latent scale)."""
    return images.check_size(size, "--size", multiple=multiple, min_side=MIN_SIDE)


def output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LeffaError(f"-o {path}: outputs are PNG images; give a name ending in .png")
    if path.is_dir():
        raise LeffaError(f"-o {path}: is a folder; give a file name ending in .png")
    ensure_writable_destination(path, "file", "-o")  # before any model loads
    return path


# -- geometry -----------------------------------------------------------------------------------------------------


def crop_box(size: Size, target: Size) -> tuple[int, int, int, int]:
    """Largest centred box (left, top, right, bottom) of an image of ``size`` with the aspect of ``target``, both
    (H, W)."""
    height, width = size
    target_h, target_w = target
    if width * target_h > height * target_w:  # too wide
        box_w, box_h = round(height * target_w / target_h), height
    else:
        box_w, box_h = width, round(width * target_h / target_w)
    left, top = (width - box_w) // 2, (height - box_h) // 2
    return left, top, left + box_w, top + box_h


def pad_to_aspect(image: Image.Image, target: Size, fill=(255, 255, 255)) -> Image.Image:
    """Pad with ``fill`` around a centred ``image`` to the aspect of ``target`` (H, W)."""
    width, height = image.size
    target_h, target_w = target
    if width * target_h > height * target_w:
        new_w, new_h = width, round(width * target_h / target_w)
    else:
        new_w, new_h = round(height * target_w / target_h), height
    if (new_w, new_h) == (width, height):
        return image
    canvas = Image.new(image.mode, (new_w, new_h), fill)
    canvas.paste(image, ((new_w - width) // 2, (new_h - height) // 2))
    return canvas


def image_tensor(image: Image.Image, size: Size) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1] at ``size`` (``leffa.images.IMAGE_FILTER``, Lanczos as upstream)."""
    return images.rgb_tensor(image, size)[None]


def mask_tensor(mask: Image.Image, size: Size) -> torch.Tensor:
    """PIL mask -> (1, 1, H, W) in {0, 1} at ``size`` (``leffa.images.mask_tensor``: Lanczos, then ``>= 0.5``)."""
    return images.mask_tensor(mask, size)[None]


def iuv_tensor(densepose: Image.Image, size: Size) -> torch.Tensor:
    """DensePose IUV -> (1, 3, H, W) in [-1, 1], nearest, as upstream (``leffa.images.iuv_tensor``)."""
    return images.iuv_tensor(densepose, size)[None]


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL RGB (rounded as diffusers' ``numpy_to_pil``)."""
    array = (image.permute(1, 2, 0).float().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def feather_radius(height: int) -> int:
    """Upstream's blur size: ``h // 100``, made odd."""
    radius = height // 100
    return radius + 1 if radius % 2 == 0 else radius


def repaint(person: Image.Image, mask: Image.Image, generated: Image.Image) -> Image.Image:
    """Upstream's repaint: ``person * (1 - m) + generated * m`` with ``m`` the Gaussian-blurred mask."""
    blurred = mask.convert("RGB").filter(ImageFilter.GaussianBlur(feather_radius(generated.size[1])))
    weight = np.asarray(blurred, dtype=np.float64) / 255
    blended = np.asarray(person, dtype=np.float64) * (1 - weight) + np.asarray(generated, dtype=np.float64) * weight
    return Image.fromarray(blended.astype(np.uint8))


# -- jobs ---------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One image to make: the photo to paste into, the conditions as images, and where the result goes."""

    photo: Image.Image  # try-on: the person; pose: the target-pose photo
    reference: Image.Image  # try-on: the garment; pose: the person to show
    mask: Image.Image  # L, photo size; white = regenerate
    densepose: Image.Image  # RGB, photo size
    densepose_kind: str  # "rgb" (try-on rendering) or "iuv" (pose transfer)
    output: Path | None = None  # None: returned only (the Python API)
    notes: list[str] = field(default_factory=list)


def condition_plugin(name: str) -> Callable | None:
    """The automatic condition maker ``name`` published under ``leffa.conditions``, if one is installed."""
    for entry in entry_points(group=CONDITIONS_GROUP):
        if entry.name == name:
            return entry.load()
    return None


def _condition(
    path, name: str, role: str, photo: Image.Image, mode: str, arg: str, offline: bool, **options
) -> Image.Image:
    if path is not None:
        return load_condition(path, role, photo_size(photo), mode)
    maker = condition_plugin(name)
    if maker is None:
        raise LeffaError(
            f"--{name} FILE is required: automatic {role} is not available in this install "
            "(give both --mask FILE and --densepose FILE)" if name == "mask" else
            f"--{name} FILE is required: automatic {role} is not available in this install"
        )
    image = maker(photo, arg, offline=offline, **options)
    if image.size != photo.size:
        raise LeffaError(f"{role} plugin returned {image.size}, the photo is {photo.size}")
    return to_grey(image) if mode == "L" else to_rgb(image, alpha="ignore")


def photo_size(image: Image.Image) -> Size:
    """(H, W) of a PIL image."""
    return image.height, image.width


def tryon_job(
    person,
    garment,
    output=None,
    mask=None,
    densepose=None,
    garment_type: str = "upper_body",
    offline: bool = False,
    mask_style: str = "upstream",
    style: str = "hd",
    edit=None,
) -> Job:
    """Read and check the inputs of one try-on (nothing is written); images are paths or PIL images.

    Missing masks and DensePose images come from the ``leffa.conditions`` plugins, made for the model's ``style``
    as the authors' app makes them: ``hd`` (VITON-HD model) the ``hd`` mask and the part rendering, ``dc``
    (DressCode model) the ``dc`` mask and the part indices; ``mask_style`` picks the mask rules. ``edit`` (a
    ``leffa.mask_edit.MaskEdit``) corrects the mask, given or automatic (grow, shrink, garment length).
    """
    if garment_type not in GARMENT_TYPES:
        raise LeffaError(f"--garment-type: unknown type {garment_type!r}; choose one of {', '.join(GARMENT_TYPES)}")
    if edit is not None:
        edit.check(garment_type)
    if mask is None:
        from leffa.preprocess.masks import check_mask_options

        check_mask_options(garment_type, style, mask_style)
    notes: list[str] = []
    photo = load_rgb(person, "person photo", notes)
    reference = load_rgb(garment, "garment image", notes)
    mask_image = _condition(mask, "mask", "garment mask", photo, "L", garment_type, offline, mask_style=mask_style,
                            style=style)  # fmt: skip
    if edit is not None and not edit.is_identity:
        from leffa.mask_edit import edit_mask

        mask_image = edit_mask(mask_image, edit, garment_type)
    if images.is_empty_mask(mask_image):
        named = isinstance(mask, (str, Path, images.Upload))
        where = mask if named else ("the automatic mask" if mask is None else "the mask")
        notes.append(f"{where}: garment mask is all black, nothing to regenerate; "
                     "the result is the person photo")
    kind = "index" if style == "dc" else "rgb"
    densepose_image = _condition(densepose, "densepose", "DensePose", photo, "RGB", kind, offline)
    return Job(photo, reference, mask_image, densepose_image, "rgb", _output(output), notes)


def pose_job(person, target, output=None, densepose=None, offline: bool = False) -> Job:
    """Read and check one pose transfer: show ``person`` in the pose of ``target`` (mask all ones, as upstream)."""
    notes: list[str] = []
    reference = load_rgb(person, "person photo", notes)
    photo = load_rgb(target, "target pose photo", notes)
    densepose_image = _condition(densepose, "densepose", "DensePose IUV", photo, "RGB", "iuv", offline)
    mask_image = Image.new("L", photo.size, 255)
    return Job(photo, reference, mask_image, densepose_image, "iuv", _output(output), notes)


def _output(output) -> Path | None:
    return Path(output) if output is not None else None


@dataclass
class Prepared:
    """A job's tensors at the working size, plus the crop box to paste into."""

    person: torch.Tensor
    reference: torch.Tensor
    mask: torch.Tensor
    densepose: torch.Tensor
    box: tuple[int, int, int, int]


def prepare(job: Job, size: Size, crop: bool = True) -> Prepared:
    box = crop_box(photo_size(job.photo), size) if crop else (0, 0, *job.photo.size)
    photo, mask, densepose = (image.crop(box) for image in (job.photo, job.mask, job.densepose))
    reference = pad_to_aspect(job.reference, size) if crop else job.reference
    densepose_tensor = images.densepose_tensor(densepose, size, job.densepose_kind)[None]
    return Prepared(image_tensor(photo, size), image_tensor(reference, size), mask_tensor(mask, size),
                    densepose_tensor, box)


def finish(job: Job, generated: Image.Image, box, use_repaint: bool) -> Image.Image:
    """Resize the generated crop to its box, repaint if asked, and paste it into the original photo."""
    box_size = (box[2] - box[0], box[3] - box[1])
    generated = images.resize(generated, (box_size[1], box_size[0]))
    if use_repaint:
        generated = repaint(job.photo.crop(box), images.binarize_image(job.mask.crop(box)), generated)
    result = job.photo.copy()
    result.paste(generated, box[:2])
    return result


def intermediates_folder(output: Path) -> Path:
    return output.with_name(output.stem + "_steps")


@torch.no_grad()
def run_jobs(
    model,
    jobs: list[Job],
    size: Size,
    options: SamplerOptions = SamplerOptions(),
    seed: int = 42,
    crop: bool = True,
    use_repaint: bool = False,
    cache: UncondFeatureCache | None = None,
    intermediate_every: int = 0,
) -> list[Image.Image]:
    """Generate ``jobs`` as one batch and return the results at the photos' sizes; a job with an ``output`` also
    has its result written there (PNG, atomically), and its intermediates beside it with ``intermediate_every``."""
    prepared = [prepare(job, size, crop) for job in jobs]
    stack = lambda name: torch.cat([getattr(p, name) for p in prepared])  # noqa: E731
    generators = seeded_generators(seed, len(jobs))
    conditions = encode_conditions(model, stack("person"), stack("reference"), stack("mask"), stack("densepose"),
                                   generators)
    on_step = None
    if intermediate_every > 0 and any(job.output is not None for job in jobs):
        for job, item in zip(jobs, prepared):
            if job.output is None:
                continue
            folder = intermediates_folder(job.output)
            save_image(to_pil(item.mask[0].expand(3, -1, -1)), folder / "mask.png")
            save_image(to_pil(item.densepose[0] / 2 + 0.5), folder / "densepose.png")

        def on_step(index, t, clean_latents):
            if (index + 1) % intermediate_every and index + 1 != options.steps:
                return
            for job, image in zip(jobs, decode_images(model, clean_latents)):
                if job.output is not None:
                    save_image(to_pil(image), intermediates_folder(job.output) / f"step_{index + 1:03d}.png")

    latents = denoise(model, conditions, options, generators, cache=cache, on_step=on_step)
    results = []
    for job, item, image in zip(jobs, prepared, decode_images(model, latents)):
        result = finish(job, to_pil(image), item.box, use_repaint)
        if job.output is not None:
            save_image(result, job.output)
        results.append(result)
    return results


# -- datasets -----------------------------------------------------------------------------------------------------


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Lines ``person.jpg cloth.jpg`` (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: pairs file not found")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise LeffaError(f"{path}:{number}: expected 'person.jpg cloth.jpg', got {line!r}")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise LeffaError(f"{path}: no pairs")
    return pairs


def output_stem(person: str | Path, garment: str | Path) -> str:
    """The name of a try-on result: the person's stem when the garment is their own (a paired test, so
    ``leffa eval --pred OUT --gt DATA/test/image`` matches it with the photo), else ``PERSON__GARMENT`` (unpaired:
    one person may wear several garments, and FID/KID compare the folders as sets). ``leffa eval --run`` uses the
    same rule."""
    person, garment = Path(person).stem, Path(garment).stem
    return person if person == garment else f"{person}__{garment}"


@dataclass(frozen=True)
class DatasetItem:
    """One try-on of a batch folder: its four input files and its output."""

    person: Path
    garment: Path
    mask: Path
    densepose: Path
    output: Path

    def inputs(self) -> dict[str, Path]:
        return {"person photo": self.person, "garment image": self.garment, "garment mask": self.mask,
                "DensePose": self.densepose}


@dataclass(frozen=True)
class PoseItem:
    """One pose transfer of a batch folder: show ``person`` in the pose of ``target`` (whose IUV is ``densepose``)."""

    person: Path
    target: Path
    densepose: Path
    output: Path

    def inputs(self) -> dict[str, Path]:
        return {"person photo": self.person, "target pose photo": self.target, "DensePose IUV": self.densepose}


def viton_hd_items(root: str | Path, pairs_file: str | Path, out_dir: str | Path) -> list[DatasetItem]:
    """Every pair of a VITON-HD-layout folder, in pairs-file order (inputs are checked by ``input_problem``).

    Layout: ``image/NAME.jpg``, ``cloth/NAME.jpg``, ``agnostic-mask/NAME_mask.png``, ``image-densepose/NAME.jpg``;
    the output of a pair is ``OUT/PERSON.png`` for a person's own garment, else ``OUT/PERSON__CLOTH.png``
    (``output_stem``). A pair listed twice is an error; missing or bad files make a pair bad (``input_problem``).
    """
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise LeffaError(f"--batch {root}: folder not found")
    pairs = read_pairs(pairs_file)
    names = set()
    for person, cloth in pairs:
        if output_stem(person, cloth) in names:
            raise LeffaError(f"{pairs_file}: the pair {person} {cloth} is listed twice")
        names.add(output_stem(person, cloth))
    return [
        DatasetItem(
            person=root / "image" / person,
            garment=root / "cloth" / cloth,
            mask=root / "agnostic-mask" / f"{Path(person).stem}_mask.png",
            densepose=root / "image-densepose" / person,
            output=out_dir / f"{output_stem(person, cloth)}.png",
        )
        for person, cloth in pairs
    ]


def pose_items(root: str | Path, pairs_file: str | Path, out_dir: str | Path) -> list[PoseItem]:
    """Every pair of a DeepFashion-layout split folder (``image/NAME.jpg``, ``densepose/NAME.png`` IUV), pairs-file
    lines ``person.jpg target.jpg``; the output is ``OUT/TARGET__PERSON.png`` (the name ``leffa eval --run`` uses)."""
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise LeffaError(f"--batch {root}: folder not found")
    return [
        PoseItem(
            person=root / "image" / person,
            target=root / "image" / target,
            densepose=root / "densepose" / f"{Path(target).stem}.png",
            output=out_dir / f"{Path(target).stem}__{Path(person).stem}.png",
        )
        for person, target in read_pairs(pairs_file)
    ]


def input_problem(item: DatasetItem | PoseItem) -> str | None:
    """What is wrong with a batch item's input files, read from their headers only (no pixels decoded), or ``None``.

    Every file must be a readable image of at least ``MIN_SIDE`` px a side; the mask and DensePose must have the
    size of the photo they belong to (the person photo for try-on, the target pose photo for pose transfer).
    """
    sizes = {}
    try:
        for role, path in item.inputs().items():
            sizes[role] = images.image_size(path, role)
            if min(sizes[role]) < MIN_SIDE:
                return f"{path}: {role} is {sizes[role][1]}x{sizes[role][0]}, too small (at least {MIN_SIDE} px a side)"
    except LeffaError as error:
        return str(error)
    photo = "person photo" if isinstance(item, DatasetItem) else "target pose photo"
    for role in ("garment mask", "DensePose", "DensePose IUV"):
        if role in sizes and sizes[role] != sizes[photo]:
            (height, width), (photo_h, photo_w) = sizes[role], sizes[photo]
            return (f"{item.inputs()[role]}: {role} is {width}x{height} but the {photo} is {photo_w}x{photo_h}; "
                    "they must be the same size")
    return None


def batches(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
