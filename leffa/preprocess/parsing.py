"""Human parsing with the SCHP ONNX models that upstream ships (``humanparsing/parsing_{atr,lip}.onnx``).

Input/output contract (the one upstream's wrapper, taken from OOTDiffusion, feeds these models):

- input: one ``float32`` tensor ``(1, 3, S, S)`` (ATR: S = 512, LIP: S = 473; read from the session when the ONNX
  file fixes it), the photo in **BGR** channel order, letterboxed: scaled by ``S / max(w - 1, h - 1)`` about its
  centre onto a black square (an affine warp, bilinear), divided by 255 and normalised with the ImageNet statistics
  in BGR order: mean ``(0.406, 0.456, 0.485)``, std ``(0.225, 0.224, 0.229)``.
- outputs: SCHP exports three tensors, ``parsing`` and ``fusion`` logits ``(1, C, S/4, S/4)`` (C = 18 ATR, 20 LIP)
  and ``edge`` ``(1, 2, S/4, S/4)``; upstream reads the second (``fusion``). The logits are upsampled bilinearly
  (``align_corners=True``) to ``S x S``, warped back onto the photo's own pixel grid by the inverse letterbox, and
  the per-pixel argmax is the label map.

Upstream then combines the two models: small islands inside the upper clothes become upper clothes, and pixels that
ATR calls face but LIP does not are labelled ``neck`` (label 18 of the person label set below).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

MODELS = {
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
    """The affine map from photo pixels to the square model input: ``x_in = (x - cx) * k + S / 2``."""

    width: int
    height: int
    size: int

    @property
    def factor(self) -> float:
        return self.size / max(self.width - 1, self.height - 1, 1)

    def to_input(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.factor
        return (x - (self.width - 1) / 2) * k + self.size / 2, (y - (self.height - 1) / 2) * k + self.size / 2

    def pil_coefficients(self) -> tuple[float, ...]:
        """PIL's AFFINE data: the map from input pixel *centres* back to photo pixel centres."""
        k = self.factor
        # PIL samples output pixel (i, j) at its centre (i + .5, j + .5) in input coordinates that also count
        # pixel edges; shifting by half a pixel on both sides gives the pixel-index form of the inverse map.
        a = 1 / k
        c = (self.width - 1) / 2 - (self.size / 2) / k + 0.5 - 0.5 / k
        f = (self.height - 1) / 2 - (self.size / 2) / k + 0.5 - 0.5 / k
        return (a, 0.0, c, 0.0, a, f)


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """The normalised BGR letterboxed ``(1, 3, size, size)`` tensor the SCHP models expect."""
    rgb = image.convert("RGB")
    box = Letterbox(rgb.width, rgb.height, size)
    warped = rgb.transform(
        (size, size), Image.Transform.AFFINE, box.pil_coefficients(), Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )
    bgr = np.asarray(warped, dtype=np.float32)[:, :, ::-1] / 255.0
    return ((bgr - BGR_MEAN) / BGR_STD).transpose(2, 0, 1)[None].astype(np.float32)


def logits_to_photo(logits: np.ndarray, box: Letterbox) -> torch.Tensor:
    """``(C, h, w)`` low-resolution logits -> ``(C, H, W)`` logits on the photo's pixel grid."""
    tensor = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))[None]
    square = F.interpolate(tensor, size=(box.size, box.size), mode="bilinear", align_corners=True)
    ys, xs = np.mgrid[0 : box.height, 0 : box.width].astype(np.float32)
    x_in, y_in = box.to_input(xs, ys)
    grid = np.stack([x_in, y_in], axis=-1) / (box.size - 1) * 2 - 1  # align_corners=True: index 0 -> -1
    grid_t = torch.from_numpy(grid.astype(np.float32))[None]
    return F.grid_sample(square, grid_t, mode="bilinear", padding_mode="border", align_corners=True)[0]


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
