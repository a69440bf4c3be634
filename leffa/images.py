"""The one place images are opened, converted, resized and binarised, for training, inference, probes and metrics.

Why one module: the same photo, mask and DensePose must become the same tensors whether the trainer
(``leffa.data``), try-on (``leffa.pipeline``), the attention probe (``leffa.probe``) or the metrics read them; a
different filter or threshold in one place is a train/inference skew the model pays for.

Sizes are ``(H, W)`` everywhere in this module (PIL's ``(W, H)`` appears only inside it). ``parse_size`` reads
the CLI's ``HxW`` strings ("1024x768" = 1024 high, 768 wide).

Opening (``open_image``): a missing path, a folder, a file Pillow cannot read, a damaged file and an image beyond
the pixel limit each give a one-line ``LeffaError`` naming the file and its role; Pillow's decompression-bomb
warning is never printed (the limit is ours: ``MAX_PIXELS``, checked from the header before decoding). EXIF
orientation is applied, and of a multi-frame file (GIF, APNG, TIFF) the first frame is used, with a note.

Converting (``to_rgb`` / ``to_grey``), every Pillow mode:

- ``RGBA``, ``LA``, ``PA``, ``RGBa``, palette or greyscale/RGB with a transparent colour: composited over
  white for photos and garments (garment cut-outs are transparent PNGs; white is the garment images' background),
  with a note. For masks and DensePose images the alpha channel is ignored (their colour carries the meaning).
- 16-bit greyscale (``I;16``, ``I;16B``, ...) is scaled by 255/65535, so it keeps its tones (Pillow's own
  conversion clips everything above 255 to white). ``I`` (32-bit integer) is read as 16-bit when any value exceeds
  255, else as 8-bit; ``F`` (float) as [0, 1] when no value exceeds 1, else as [0, 255]. Values are clipped.
- ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``HSV``, ``LAB`` go through Pillow's conversions (greyscale is expanded
  to RGB, with a note for photos). A mode Pillow cannot convert is an error naming it.

Resizing, one filter per kind of content, shared by training and inference:

- pictures (photos, garments, DensePose renderings): ``IMAGE_FILTER`` = Lanczos. It is what upstream Leffa's
  inference uses (diffusers' ``VaeImageProcessor``), so the released weights see their own preprocessing, and it is
  the sharpest of Pillow's anti-aliasing filters when downscaling, the common case (camera photos -> 1024x768).
  Training used bicubic before; it now uses Lanczos too.
- masks: Lanczos on the grey values, then ``binarize`` (>= 0.5, i.e. >= 128 of 255, white = regenerate), the one
  threshold everywhere (data loading, try-on, repaint, probe, metrics, overlays). Upstream does the same.
- labels (parsing maps, DensePose IUV and part indices): ``LABEL_FILTER`` = nearest, since interpolating a label
  invents labels.

Not here on purpose: the resizes that reproduce a third-party network's own preprocessing (OpenPose's bicubic,
SCHP parsing's and DensePose's bilinear; their parity tests compare against those networks), display scaling in
``leffa.viz``, and the drawing of synthetic data.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from leffa.errors import LeffaError

Size = tuple[int, int]  # (H, W)

MIN_SIDE = 32  # smallest photo side try-on accepts (and the smallest working size)
MAX_PIXELS = 64_000_000  # the largest image any command opens (checked before decoding)
IMAGE_FILTER = Image.Resampling.LANCZOS
LABEL_FILTER = Image.Resampling.NEAREST
MASK_THRESHOLD = 0.5  # of the [0, 1] grey value: 128 and above of 255 is "regenerate"

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


# -- opening ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """An image file's bytes and the name it had on the sender's side (an HTTP upload): opened with the same checks
    and one-line messages as a path, naming ``name``. ``str()`` is the name, so messages read as for a file."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


def open_image(
    path: str | Path | Image.Image | Upload,
    role: str = "image",
    *,
    min_side: int = 1,
    max_pixels: int = MAX_PIXELS,
    notes: list[str] | None = None,
) -> Image.Image:
    """Open, check and decode ``path`` (first frame, EXIF orientation applied); any mode.

    Errors name the file and its ``role`` ("person photo", "--mask", ...). ``notes`` receives remarks the user
    should see (several frames). The size limits are checked from the header, before the pixels are decoded.
    A PIL image (the Python API accepts them as well as paths) gets the same size checks and is returned as is.
    """
    if isinstance(path, Image.Image):
        width, height = path.size
        if min(width, height) < min_side:
            raise LeffaError(f"{role} ({width}x{height} image) is too small (at least {min_side} px a side)")
        if width * height > max_pixels:
            raise LeffaError(f"{role} ({width}x{height} image) is too large (at most {max_pixels // 1_000_000} MP)")
        return path
    path = path if isinstance(path, Upload) else Path(path)
    image = _open_lazily(path, role, max_pixels)
    width, height = image.size
    problem = None
    if min(width, height) < min_side:
        problem = f"{path}: {role} is {width}x{height}, too small (at least {min_side} px a side)"
    elif width * height > max_pixels:
        problem = f"{path}: {role} is {width}x{height}, too large (at most {max_pixels // 1_000_000} MP)"
    frames = getattr(image, "n_frames", 1) if problem is None else 1
    if problem is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's warnings (EXIF, palette) are not the user's business
                if frames > 1:
                    image.seek(0)
                image.load()
                image = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            problem = f"{path}: {role} is damaged or truncated ({_first_line(error)})"
    if problem is not None:
        image.close()
        raise LeffaError(problem)
    if frames > 1 and notes is not None:
        notes.append(f"{path}: {role} has {frames} frames; the first is used")
    return image


def image_size(path: str | Path | Upload, role: str = "image") -> Size:
    """``(H, W)`` of an image file from its header, without decoding its pixels (errors as ``open_image``)."""
    with _open_lazily(path if isinstance(path, Upload) else Path(path), role, MAX_PIXELS) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _open_lazily(path: Path | Upload, role: str, max_pixels: int) -> Image.Image:
    """``Image.open`` (header only) with every failure as a one-line ``LeffaError`` and no Pillow warning."""
    if isinstance(path, Upload):
        if not path.data:
            raise LeffaError(f"{path}: {role} is empty (0 bytes)")
    elif path.is_dir():
        raise LeffaError(f"{path}: {role} is a folder, not an image file")
    elif not path.is_file():
        raise LeffaError(f"{path}: {role} not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(path.data) if isinstance(path, Upload) else path)
        except Image.DecompressionBombError:
            raise LeffaError(f"{path}: {role} is too large (at most {max_pixels // 1_000_000} MP)") from None
        except UnidentifiedImageError:
            raise LeffaError(f"{path}: {role} is not an image (or not a format Pillow reads)") from None
        except (OSError, ValueError) as error:
            raise LeffaError(f"{path}: {role} cannot be read ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- converting ---------------------------------------------------------------------------------------------------


def has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _grey_array(image: Image.Image) -> np.ndarray | None:
    """8-bit grey values of a 16-bit, 32-bit integer or float image (None for the modes Pillow converts right)."""
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.float64) * (255 / 65535)
    elif image.mode == "I":
        values = np.asarray(image).astype(np.float64)
        if values.size and values.max() > 255:
            values = values * (255 / 65535)
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image).astype(np.float64))
        if values.size and values.max() <= 1.0:
            values = values * 255
    else:
        return None
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def to_grey(image: Image.Image) -> Image.Image:
    """Mode ``L`` (alpha ignored; 16-bit, integer and float images scaled as the module docstring says)."""
    if image.mode == "L":
        return image
    values = _grey_array(image)
    if values is not None:
        return Image.fromarray(values)
    if image.mode in ("PA", "RGBa"):
        image = _convert(image, "RGBA")
    elif image.mode in ("La", "LAB"):
        image = _lab_to_rgb(image) if image.mode == "LAB" else image.getchannel(0)
    return _convert(image, "L")


def to_rgb(image: Image.Image, alpha: str = "white", notes: list[str] | None = None, what: str = "") -> Image.Image:
    """Mode ``RGB``. ``alpha="white"`` composites transparency over white, ``"ignore"`` drops the alpha channel.

    ``notes`` (with ``what``, e.g. "person.png: person photo") receives a note for each conversion a user may not
    expect (transparency, greyscale).
    """
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if has_alpha(image):
        if alpha == "white":
            rgba = _convert(image, "RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            if notes is not None:
                notes.append(f"{what} has transparency; composited over white")
            return Image.alpha_composite(background, rgba).convert("RGB")
        if image.mode == "LA":
            return to_grey(image).convert("RGB")
        if image.mode not in ("RGBA", "RGBa"):
            image = _convert(image, "RGBA")
        return _convert(image, "RGB")
    if image.mode == "LAB":
        return _lab_to_rgb(image)
    if image.mode in ("1", "L", "La", "I", "F") or image.mode in _SIXTEEN_BIT:
        if notes is not None:
            notes.append(f"{what} is greyscale; converted to RGB")
        return to_grey(image).convert("RGB")
    return _convert(image, "RGB")


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    """CIE LAB -> sRGB through Pillow's colour management (``convert`` has no LAB -> RGB path)."""
    from PIL import ImageCms

    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    converted = ImageCms.applyTransform(image, transform)
    assert converted is not None  # None only with inPlace=True
    return converted


def _convert(image: Image.Image, mode: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return image.convert(mode)
    except ValueError:
        raise LeffaError(f"images of mode {image.mode} cannot be converted to {mode}") from None


def read_rgb(
    path: str | Path | Image.Image | Upload,
    role: str = "image",
    notes: list[str] | None = None,
    *,
    min_side: int = 1,
    alpha: str = "white",
) -> Image.Image:
    """``open_image`` then ``to_rgb`` (transparency over white unless ``alpha="ignore"``)."""
    what = role if isinstance(path, Image.Image) else f"{path}: {role}"
    return to_rgb(open_image(path, role, min_side=min_side, notes=notes), alpha, notes, what)


# -- resizing and tensors -----------------------------------------------------------------------------------------


def resize(image: Image.Image, size: Size, resample=IMAGE_FILTER) -> Image.Image:
    """``image`` at ``size`` = (H, W) (a copy when it already has that size)."""
    height, width = size
    if image.size == (width, height):
        return image.copy()
    return image.resize((width, height), resample)


def resize_labels(image: Image.Image, size: Size) -> Image.Image:
    """A label image (parsing map, IUV, part indices, binary map) at ``size`` = (H, W), nearest."""
    return resize(image, size, LABEL_FILTER)


def rgb_tensor(image: Image.Image, size: Size) -> torch.Tensor:
    """A picture -> ``(3, H, W)`` float32 in [-1, 1] at ``size`` (``IMAGE_FILTER``)."""
    array = np.asarray(resize(to_rgb(image, "ignore"), size), dtype=np.float32)
    return torch.from_numpy(array.copy()).permute(2, 0, 1) / 127.5 - 1.0


def unit_tensor(image: Image.Image, size: Size | None = None) -> torch.Tensor:
    """A picture -> ``(3, H, W)`` float32 in [0, 1], resized to ``size`` (``IMAGE_FILTER``) when given (metrics)."""
    rgb = to_rgb(image, "ignore")
    if size is not None:
        rgb = resize(rgb, size)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def binarize(values):
    """The one mask rule: grey values in [0, 1] (array or tensor) -> bool, ``>= MASK_THRESHOLD`` = regenerate."""
    return values >= MASK_THRESHOLD


def binarize_image(mask: Image.Image) -> Image.Image:
    """A mask image -> mode ``L`` with 0 / 255 only, by ``binarize``."""
    values = np.asarray(to_grey(mask), dtype=np.float32) / 255.0
    return Image.fromarray(binarize(values).astype(np.uint8) * 255)


def mask_array(mask: Image.Image) -> np.ndarray:
    """A mask image -> ``(H, W)`` bool at its own size, by ``binarize``."""
    return binarize(np.asarray(to_grey(mask), dtype=np.float32) / 255.0)


def is_empty_mask(mask: Image.Image) -> bool:
    """True when no pixel of ``mask`` is to be regenerated (all black under ``binarize``)."""
    return not bool(mask_array(mask).any())


def mask_tensor(mask: Image.Image, size: Size) -> torch.Tensor:
    """A mask image -> ``(1, H, W)`` float32 in {0, 1} at ``size``: grey, resized (``IMAGE_FILTER``), binarised."""
    grey = np.asarray(resize(to_grey(mask), size), dtype=np.float32) / 255.0
    return torch.from_numpy(binarize(grey).astype(np.float32))[None]


def iuv_tensor(densepose: Image.Image, size: Size) -> torch.Tensor:
    """A DensePose IUV image (R = U, G = V in 0..255, B = part index 0..24) -> ``(3, H, W)`` in [-1, 1], nearest.

    As upstream's pose-transfer transform: U and V divided by 255, the part index by 24, then mapped to [-1, 1].
    """
    array = np.asarray(resize_labels(to_rgb(densepose, "ignore"), size), dtype=np.float32).copy()
    array[..., 0:2] /= 255.0
    array[..., 2:3] /= 24.0
    return torch.from_numpy(array).permute(2, 0, 1) * 2.0 - 1.0


def densepose_tensor(densepose: Image.Image, size: Size, kind: str = "rgb") -> torch.Tensor:
    """The DensePose condition -> ``(3, H, W)`` in [-1, 1]: ``"rgb"`` renderings (try-on) as pictures,
    ``"iuv"`` (pose transfer) by ``iuv_tensor``."""
    if kind == "iuv":
        return iuv_tensor(densepose, size)
    if kind != "rgb":
        raise LeffaError(f"unknown DensePose kind {kind!r}; choose rgb or iuv")
    return rgb_tensor(densepose, size)


def label_array(image: Image.Image, size: Size | None = None) -> np.ndarray:
    """A single-channel label image (``L``, ``P`` indices, 16-bit, ``I``) -> ``(H, W)`` int64, nearest-resized."""
    if image.mode not in ("L", "P", "I") and image.mode not in _SIXTEEN_BIT:
        image = to_grey(image)
    if size is not None:
        image = resize_labels(image, size)
    return np.array(image, dtype=np.int64)


# -- sizes --------------------------------------------------------------------------------------------------------


def parse_size(value: str | Sequence[int], option: str = "--size", *, multiple: int = 1, min_side: int = 1) -> Size:
    """``"1024x768"`` (also ``1024X768``, ``1024*768``), ``[1024, 768]`` or ``(1024, 768)`` -> ``(H, W)``.

    The CLI's sizes are written height x width. Both sides must be at least ``min_side`` and multiples of
    ``multiple``; anything else is a ``LeffaError`` naming ``option``.
    """
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", value)
        if match is None:
            raise LeffaError(f"{option} {value!r}: expected HEIGHTxWIDTH, e.g. 1024x768")
        size: tuple[int, ...] = (int(match.group(1)), int(match.group(2)))
    else:
        try:
            size = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise LeffaError(f"{option} {value!r}: expected HEIGHTxWIDTH, e.g. 1024x768") from None
        if len(size) != 2:
            raise LeffaError(f"{option} {value!r}: expected HEIGHTxWIDTH, e.g. 1024x768")
    return check_size(size, option, multiple=multiple, min_side=min_side)


def check_size(size: Sequence[int], option: str = "--size", *, multiple: int = 1, min_side: int = 1) -> Size:
    """``size`` = (H, W) when both sides are at least ``min_side`` and multiples of ``multiple``."""
    height, width = (int(v) for v in size)
    if height < max(1, min_side) or width < max(1, min_side):
        least = f"at least {min_side} px" if min_side > 1 else "positive"
        raise LeffaError(f"{option} {height}x{width}: height and width must be {least}")
    if height % multiple or width % multiple:
        raise LeffaError(f"{option} {height}x{width}: height and width must be multiples of {multiple}")
    return height, width
