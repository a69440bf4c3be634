"""Human parsing with the SCHP ONNX models that upstream ships (``humanparsing/parsing_{atr,lip}.onnx``).

Input/output contract (the one upstream's wrapper, taken from OOTDiffusion, feeds these models):

- input: one ``float32`` tensor ``(1, 3, S, S)`` (ATR: S = 512, LIP: S = 473; read from the session when the ONNX
  file fixes it), the photo in **BGR** channel order, warped onto a black square by SCHP's affine transform (centre
  ``((w - 1) / 2, (h - 1) / 2)`` to ``((S - 1) / 2, (S - 1) / 2)``, scale ``(S - 1) / max(w - 1, h - 1)``) with
  ``cv2.warpAffine``'s bilinear fixed-point rules (reproduced here bit for bit, no OpenCV needed), divided by 255
  and normalised with the ImageNet statistics in BGR order: mean ``(0.406, 0.456, 0.485)``, std
  ``(0.225, 0.224, 0.229)``.
- outputs: SCHP exports three tensors, ``parsing`` and ``fusion`` logits ``(1, C, S/4, S/4)`` (C = 18 ATR, 20 LIP)
  and ``edge`` ``(1, 2, S/4, S/4)``; upstream reads the second (``fusion``). The logits are upsampled bilinearly
  (``align_corners=True``) to ``S x S``, warped back onto the photo's own pixel grid by the inverse transform (zero
  outside the square, as SCHP's ``transform_logits``), and the per-pixel argmax is the label map.

Upstream then combines the two models: small islands inside the upper clothes become upper clothes, and pixels that
ATR calls face but LIP does not are labelled ``neck`` (label 18 of the person label set below).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from leffa import images
from leffa.errors import LeffaError

ATR_LABELS = (
    "background", "hat", "hair", "sunglasses", "upper-clothes", "skirt", "pants", "dress", "belt", "left-shoe",
    "right-shoe", "face", "left-leg", "right-leg", "left-arm", "right-arm", "bag", "scarf",
)  # fmt: skip
LIP_LABELS = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
    "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe", "right-shoe",
)  # fmt: skip
# The label set the mask rules read: ATR's 18 classes, then the neck (upstream's label 18) and LIP's gloves.
PERSON_LABELS = ATR_LABELS + ("neck", "glove")
# LIP classes that ATR lacks, folded into the person label set (a coat is worn as upper clothes, and so on).
LIP_TO_PERSON_NAMES = {"coat": "upper-clothes", "jumpsuits": "dress", "socks": "left-leg"}


class ParsingModelInfo(TypedDict):
    labels: tuple[str, ...]  # the model's label set, index = class id
    size: int  # its square input side when the graph does not fix one
    hub_file: str  # where ``leffa.hub.fetch`` finds it


MODELS: dict[str, ParsingModelInfo] = {
    "atr": {"labels": ATR_LABELS, "size": 512, "hub_file": "humanparsing/parsing_atr.onnx"},
    "lip": {"labels": LIP_LABELS, "size": 473, "hub_file": "humanparsing/parsing_lip.onnx"},
}
BGR_MEAN = np.array([0.406, 0.456, 0.485], dtype=np.float32)
BGR_STD = np.array([0.225, 0.224, 0.229], dtype=np.float32)
MAX_LABEL_HEIGHT = 1024
# Islands of other labels inside the upper clothes smaller than this share of the image become upper clothes.
ISLAND_FRACTION = 0.01


def label_id(name: str, labels: tuple[str, ...] = PERSON_LABELS) -> int:
    return labels.index(name)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise LeffaError("human parsing needs onnxruntime: pip install 'leffa[onnx]' (or onnxruntime-gpu)") from None
    return onnxruntime


def onnx_providers(device: str = "auto") -> list[str]:
    """CUDA when onnxruntime offers it (and ``device`` allows it), CPU otherwise."""
    if device not in ("auto", "cpu", "cuda"):
        raise LeffaError(f"--device {device}: expected auto, cpu or cuda")
    available = import_onnxruntime().get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise LeffaError("--device cuda: onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Letterbox:
    """SCHP's affine map between photo pixels and the square model input (``get_affine_transform``, rotation 0).

    SCHP describes the photo by the box ``[0, 0, w - 1, h - 1]``: centre ``c = ((w - 1) / 2, (h - 1) / 2)`` and
    scale ``s = max(w - 1, h - 1)`` (the box widened to the square aspect). The map sends ``c`` to the input's centre
    ``((S - 1) / 2, (S - 1) / 2)`` and scales by ``k = (S - 1) / s``: ``x_in = k * (x - cx) + (S - 1) / 2``, so the
    photo's longer side spans input pixels 0..S-1 exactly.
    """

    width: int
    height: int
    size: int

    @property
    def scale(self) -> float:
        return float(max(self.width - 1, self.height - 1, 1))

    @property
    def factor(self) -> float:
        return (self.size - 1) / self.scale

    def matrix(self) -> np.ndarray:
        """``(2, 3)`` float64 photo -> input map (SCHP's ``trans``)."""
        k, half = self.factor, (self.size - 1) / 2
        cx, cy = (self.width - 1) / 2, (self.height - 1) / 2
        return np.array([[k, 0.0, half - k * cx], [0.0, k, half - k * cy]])

    def inverse_matrix(self) -> np.ndarray:
        """``(2, 3)`` float64 input -> photo map (SCHP's ``inv=1`` transform, used to bring the logits back)."""
        return invert_affine(self.matrix())

    def to_input(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.matrix()
        return m[0, 0] * x + m[0, 2], m[1, 1] * y + m[1, 2]


# OpenCV's warpAffine (INTER_LINEAR) in fixed point: the sample position of each output pixel is computed in units
# of 1/1024 pixel (AB_BITS = 10), rounded to 1/32 pixel (INTER_BITS = 5), and 8-bit images are blended with integer
# weights that sum to 2**15. Reproducing those rules gives the parsing models the very input the authors' app
# (cv2.warpAffine in SCHP's data loader) gives them.
AB_SCALE = 1 << 10
INTER_BITS = 5
INTER_TAB = 1 << INTER_BITS
COEF_BITS = 15


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a ``(2, 3)`` affine map, computed as OpenCV's warpAffine does (double precision)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(6)
    det = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / det if det != 0 else 0.0
    a11, a22, a12, a21 = m[4] * d, m[0] * d, -m[1] * d, -m[3] * d
    b1 = -a11 * m[2] - a12 * m[5]
    b2 = -a21 * m[2] - a22 * m[5]
    return np.array([[a11, a12, b1], [a21, a22, b2]])


def sample_positions(
    matrix: np.ndarray, out_hw: tuple[int, int], rows: tuple[int, int] | None = None
) -> tuple[np.ndarray, ...]:
    """Source pixel ``(ix, iy)`` (int64, (H, W)) and 1/32-pixel fractions ``(fx, fy)`` that ``cv2.warpAffine``
    samples for each output pixel (of output ``rows`` [start, stop) only, when given), ``matrix`` being the forward
    (source -> output) map it is given."""
    inv = invert_affine(matrix)
    height, width = out_hw
    start, stop = rows if rows is not None else (0, height)
    xs, ys = np.arange(width, dtype=np.float64), np.arange(start, stop, dtype=np.float64)
    round_delta = AB_SCALE // INTER_TAB // 2
    adelta = np.rint(inv[0, 0] * xs * AB_SCALE).astype(np.int64)
    bdelta = np.rint(inv[1, 0] * xs * AB_SCALE).astype(np.int64)
    x0 = np.rint((inv[0, 1] * ys + inv[0, 2]) * AB_SCALE).astype(np.int64) + round_delta
    y0 = np.rint((inv[1, 1] * ys + inv[1, 2]) * AB_SCALE).astype(np.int64) + round_delta
    shift = 10 - INTER_BITS
    x = (x0[:, None] + adelta[None, :]) >> shift
    y = (y0[:, None] + bdelta[None, :]) >> shift
    return x >> INTER_BITS, y >> INTER_BITS, x & (INTER_TAB - 1), y & (INTER_TAB - 1)


def _padded(source: np.ndarray) -> np.ndarray:
    """``source`` (h, w, ...) with one row/column of zeros on every side: out-of-image samples read it."""
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (source.ndim - 2)
    return np.pad(source, pad)


def _corners(padded: np.ndarray, ix: np.ndarray, iy: np.ndarray) -> list[np.ndarray]:
    """The 2x2 neighbours ``(y, x), (y, x+1), (y+1, x), (y+1, x+1)`` of each position, read from a :func:`_padded`
    source, zero outside the image (OpenCV's BORDER_CONSTANT with value 0): indices are clamped onto the zero pad.
    When every row samples the same columns and every column the same rows (no rotation or shear), the reads are
    two 1-d gathers instead of one 2-d gather."""
    height, width = padded.shape[0] - 2, padded.shape[1] - 2
    separable = (ix == ix[:1]).all() and (iy == iy[:, :1]).all()
    out = []
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy = np.clip(iy + dy + 1, 0, height + 1)
        xx = np.clip(ix + dx + 1, 0, width + 1)
        if separable:
            out.append(np.take(np.take(padded, yy[:, 0], axis=0), xx[0], axis=1))
        else:
            out.append(padded[yy, xx])
    return out


def warp_affine_u8(image: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``cv2.warpAffine(image, matrix, (W, H), INTER_LINEAR, BORDER_CONSTANT, 0)`` for a uint8 ``(h, w, C)`` image,
    bit for bit: weights ``(32 - fy)(32 - fx) * 32`` etc. (sum 2**15), result ``(sum + 2**14) >> 15``."""
    ix, iy, fx, fy = sample_positions(matrix, out_hw)
    fx, fy = fx[..., None], fy[..., None]
    scale = (1 << COEF_BITS) // (INTER_TAB * INTER_TAB)
    weights = ((INTER_TAB - fy) * (INTER_TAB - fx), (INTER_TAB - fy) * fx, fy * (INTER_TAB - fx), fy * fx)
    total = sum(w * scale * c.astype(np.int64) for w, c in zip(weights, _corners(_padded(image), ix, iy)))
    return ((total + (1 << (COEF_BITS - 1))) >> COEF_BITS).clip(0, 255).astype(np.uint8)


def warp_affine_f32(image: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int], block: int = 64) -> np.ndarray:
    """``cv2.warpAffine`` (INTER_LINEAR, zero border) of a float32 ``(h, w, C)`` array: the same 1/32-pixel sample
    positions, float32 weights ``(1 - fy/32)(1 - fx/32)`` etc., summed in that order. Computed ``block`` output rows
    at a time, so the temporaries stay small for many-channel logits."""
    padded = _padded(image.astype(np.float32, copy=False))
    out = np.empty((*out_hw, image.shape[2]), dtype=np.float32)
    one = np.float32(1)
    for start in range(0, out_hw[0], block):
        stop = min(start + block, out_hw[0])
        ix, iy, fx, fy = sample_positions(matrix, out_hw, (start, stop))
        ax = (fx.astype(np.float32) / INTER_TAB)[..., None]
        ay = (fy.astype(np.float32) / INTER_TAB)[..., None]
        weights = ((one - ay) * (one - ax), (one - ay) * ax, ay * (one - ax), ay * ax)
        c = _corners(padded, ix, iy)
        out[start:stop] = c[0] * weights[0] + c[1] * weights[1] + c[2] * weights[2] + c[3] * weights[3]
    return out


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """The normalised BGR ``(1, 3, size, size)`` float32 tensor the SCHP models expect: the photo warped by
    :class:`Letterbox` exactly as ``cv2.warpAffine`` does (bilinear, black outside), ``/ 255``, ImageNet statistics."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    box = Letterbox(rgb.shape[1], rgb.shape[0], size)
    warped = warp_affine_u8(np.ascontiguousarray(rgb[:, :, ::-1]), box.matrix(), (size, size))
    bgr = warped.astype(np.float32) / np.float32(255.0)
    return ((bgr - BGR_MEAN) / BGR_STD).transpose(2, 0, 1)[None].astype(np.float32)


def logits_to_photo(logits: np.ndarray, box: Letterbox) -> torch.Tensor:
    """``(C, h, w)`` low-resolution logits -> ``(C, H, W)`` logits on the photo's pixel grid: bilinear upsampling
    (``align_corners=True``) to ``S x S``, then SCHP's ``transform_logits`` (warpAffine by the inverse map, zero
    outside the square)."""
    tensor = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))[None]
    square = F.interpolate(tensor, size=(box.size, box.size), mode="bilinear", align_corners=True)[0]
    photo = warp_affine_f32(square.permute(1, 2, 0).numpy(), box.inverse_matrix(), (box.height, box.width))
    return torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1)))


class HumanParser:
    """One SCHP parsing model in an onnxruntime session; call it on a PIL image to get its label map."""

    def __init__(self, path: str | Path, model: str = "atr", device: str = "auto", threads: int | None = None):
        ort = import_onnxruntime()

        if model not in MODELS:
            raise LeffaError(f"--model {model}: unknown parsing model (choose from {', '.join(MODELS)})")
        path = Path(path)
        if not path.is_file():
            raise LeffaError(f"{path}: parsing model not found")
        self.model = model
        self.labels: tuple[str, ...] = MODELS[model]["labels"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=onnx_providers(device))
        except Exception as error:  # noqa: BLE001 - a broken file is the user's problem, named in one line
            raise LeffaError(f"{path}: not a loadable ONNX model ({str(error).splitlines()[0]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise LeffaError(f"{path}: expected one 4-d image input, found {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        height, width = inputs[0].shape[2:]
        fixed = [d for d in (height, width) if isinstance(d, int)]
        if fixed and (len(fixed) != 2 or height != width):
            raise LeffaError(f"{path}: expected a square input, found {inputs[0].shape}")
        self.size = int(height) if fixed else MODELS[model]["size"]
        self.output_index = self._logits_output(path)

    def _logits_output(self, path: Path) -> int:
        """Index of the output to read: upstream's ``fusion`` (the second ``C``-channel output), else the only one."""
        classes = len(self.labels)
        matching = [i for i, o in enumerate(self.session.get_outputs()) if len(o.shape) == 4 and o.shape[1] == classes]
        if not matching:
            shapes = [o.shape for o in self.session.get_outputs()]
            raise LeffaError(
                f"{path}: no output has {classes} channels for the {self.model.upper()} labels (outputs: {shapes}); "
                f"is this the {'LIP' if self.model == 'atr' else 'ATR'} model? pass --model accordingly"
            )
        return matching[1] if len(matching) > 1 else matching[0]

    def logits(self, image: Image.Image) -> torch.Tensor:
        """``(C, H, W)`` class logits on the image's own pixel grid."""
        outputs = self.session.run(None, {self.input_name: model_input(image, self.size)})
        raw = np.asarray(outputs[self.output_index])
        if raw.ndim != 4 or raw.shape[1] != len(self.labels):
            raise LeffaError(f"parsing model returned {raw.shape}, expected (1, {len(self.labels)}, h, w)")
        return logits_to_photo(raw[0], Letterbox(image.width, image.height, self.size))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """``(H, W)`` uint8 label map in this model's own label set (``self.labels``).

        Photos taller than ``MAX_LABEL_HEIGHT`` are labelled on a smaller copy and the labels resized (nearest):
        the model sees at most ``S`` pixels anyway, and full-size logits of a phone photo would take gigabytes.
        """
        if image.height > MAX_LABEL_HEIGHT:
            width = max(1, round(image.width * MAX_LABEL_HEIGHT / image.height))
            small = self(image.convert("RGB").resize((width, MAX_LABEL_HEIGHT), Image.Resampling.BILINEAR))
            return np.asarray(Image.fromarray(small).resize(image.size, Image.Resampling.NEAREST))
        return self.logits(image).argmax(0).numpy().astype(np.uint8)


def to_person_labels(labels: np.ndarray, model: str) -> np.ndarray:
    """An ATR or LIP label map in the person label set (``PERSON_LABELS``) that the mask rules read."""
    if model == "atr":
        return labels.astype(np.uint8)
    table = np.zeros(len(LIP_LABELS), dtype=np.uint8)
    for index, name in enumerate(LIP_LABELS):
        table[index] = PERSON_LABELS.index(LIP_TO_PERSON_NAMES.get(name, name))
    return table[labels]


def fill_upper_clothes_islands(person: np.ndarray, min_fraction: float = ISLAND_FRACTION) -> np.ndarray:
    """Small islands of other labels enclosed by upper clothes (and arms) become upper clothes; arms stay arms.

    Why: parsers leave speckles (a logo read as "bag", a fold read as "skin") that would punch holes in a mask.
    Islands of at least ``min_fraction`` of the image (a real bag held in front of the shirt) keep their label.
    """
    upper, arms = label_id("upper-clothes"), (label_id("left-arm"), label_id("right-arm"))
    is_arm = np.isin(person, arms)
    region = (person == upper) | is_arm
    holes = ndimage.binary_fill_holes(region) & ~region
    islands, count = ndimage.label(holes)
    if count == 0:
        return person
    sizes = ndimage.sum_labels(holes, islands, index=np.arange(1, count + 1))
    small = np.isin(islands, 1 + np.flatnonzero(sizes < min_fraction * person.size))
    out = person.copy()
    out[small] = upper
    return out


def add_neck(person: np.ndarray, lip_labels: np.ndarray) -> np.ndarray:
    """Pixels ATR calls face but LIP does not: the neck (LIP's "face" stops at the chin, ATR's goes lower)."""
    out = person.copy()
    out[(person == label_id("face")) & (lip_labels != LIP_LABELS.index("face"))] = label_id("neck")
    return out


def combine_parsings(atr_labels: np.ndarray, lip_labels: np.ndarray | None = None) -> np.ndarray:
    """Upstream's combination: ATR labels, upper-clothes islands filled, plus the neck where LIP is given."""
    person = fill_upper_clothes_islands(to_person_labels(atr_labels, "atr"))
    return add_neck(person, lip_labels) if lip_labels is not None else person


def parse_person(image: Image.Image, atr: HumanParser, lip: HumanParser | None = None) -> np.ndarray:
    """The person label map of ``image`` from the ATR parser and, for the neck, the LIP parser."""
    if atr.model != "atr" or (lip is not None and lip.model != "lip"):
        raise LeffaError("parse_person needs the ATR parser first and, optionally, the LIP parser second")
    return combine_parsings(atr(image), lip(image) if lip is not None else None)


def palette(count: int = 256) -> list[int]:
    """The PASCAL-style colour map (bits of the label spread over R, G, B) that parsing PNGs use."""
    colours = []
    for label in range(count):
        r = g = b = 0
        value, shift = label, 7
        while value:
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
            shift -= 1
        colours += [r, g, b]
    return colours


def label_image(labels: np.ndarray) -> Image.Image:
    """A palette PNG image of a label map: pixel values are the labels, colours only for viewing."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(palette())
    return image


def read_label_image(path: str | Path) -> np.ndarray:
    """A label map saved by ``label_image`` (or any single-channel PNG of labels)."""
    image = images.open_image(path, "parsing map")
    if image.mode not in ("P", "L"):
        raise LeffaError(f"{path}: a parsing map must be a palette or greyscale PNG of labels, not {image.mode}")
    return np.asarray(image, dtype=np.uint8)
