"""The Python API, in the diffusers manner: load a pipeline once, call it with images, get images back.

    import leffa

    pipe = leffa.TryOnPipeline.from_pretrained("synth-tiny", device="cpu", dtype="fp32")
    result = pipe("person.jpg", "garment.jpg", steps=30, seed=42)
    result.images[0].save("out.png")

``from_pretrained`` accepts everything ``--model`` does (``viton_hd``, ``dress_code``, ``pose_transfer``,
``synth-tiny``, a file or folder, a hub id; ``backend="onnx"`` with an export folder) and goes through
``leffa.weights.open_model``, as the commands do. A call takes PIL images or paths, or lists of them for a batch;
a missing ``mask``/``densepose`` is made by the ``leffa.conditions`` plugins (``leffa.automatic``). The result holds
the images at each photo's own size and the conditions that were used. ``leffa tryon`` and ``leffa pose`` run
through these classes (``prepare`` then ``generate``), so the API and the commands give the same pixels for the
same inputs and seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from PIL import Image

from leffa.errors import LeffaError
from leffa.mask_edit import MaskEdit
from leffa.pipeline import Job, pose_job, run_jobs, tryon_job
from leffa.sampler import SamplerOptions, UncondFeatureCache

ImageInput = Union[str, Path, Image.Image]
Images = Union[ImageInput, Sequence[ImageInput]]


@dataclass
class PipelineOutput:
    """What a pipeline call made: ``images`` (PIL RGB, each at its photo's size) and the conditions used for them,
    ``masks`` (PIL L, white = regenerated) and ``denseposes`` (PIL RGB), one per image, plus notes about the inputs
    (e.g. a transparent garment composited over white)."""

    images: list[Image.Image]
    masks: list[Image.Image]
    denseposes: list[Image.Image]
    notes: list[str] = field(default_factory=list)


def _as_list(value, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if not value:
            raise LeffaError(f"{name}: an empty list; give at least one image")
        return list(value)
    return [value]


def _matched(name: str, values, count: int) -> list:
    """``values`` as a list of ``count``: ``None`` for each when ``None``, one value for a single input."""
    if values is None:
        return [None] * count
    values = _as_list(values, name)
    if len(values) != count:
        raise LeffaError(f"{name}: {len(values)} given for {count} images; give one per image")
    return values


class _Pipeline:
    """A placed model and its working size; ``prepare`` reads inputs, ``generate`` samples them."""

    task = "vton"

    def __init__(self, model, size: tuple[int, int], source: str = "", notes: Sequence[str] = (),
                 offline: bool = False):
        self.model = model
        height, width = size
        self.size = (height, width)  # working size
        self.source = source
        self.notes = list(notes)  # about the model, e.g. "made for pose, running it for vton"
        self.offline = offline

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        size: str | tuple[int, int] | None = None,
        base: str | Path | None = None,
        offline: bool = False,
        backend: str = "torch",
        channels_last: bool = False,
        compile: bool = False,
        offload: str = "none",
        attention_slice: int | None = None,
    ):
        """Load ``model`` (default: upstream's model for the task) placed on ``device`` in ``dtype``.

        ``device``: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps``; ``dtype``: ``auto``
        (fp16 on a GPU, fp32 on the CPU), ``fp32``, ``fp16``, ``bf16``. ``size`` (``"HxW"`` or ``(H, W)``) overrides
        the working size, by default the size the model was trained at. ``offline`` uses only the local hub cache
        (for the model and the automatic-condition models). ``offload="model"`` / ``"sequential"`` keeps the weights
        on the CPU and runs them on ``device`` part by part (less GPU memory, slower; ``leffa.offload``);
        ``attention_slice=N`` computes attention in slices of N queries (same pixels; saves memory only without a
        fused attention kernel, e.g. on MPS).
        """
        from leffa.weights import open_model

        resolved = open_model(model, cls.task, device=device, dtype=dtype, size=size, base=base, offline=offline,
                              backend=backend, channels_last=channels_last, compile=compile, offload=offload,
                              attention_slice=attention_slice)
        assert resolved.image_size is not None  # open_model always chooses a working size
        return cls(resolved.model, resolved.image_size, resolved.source, resolved.notes, offline)

    def __repr__(self) -> str:
        device = getattr(self.model, "device", "?")
        dtype = str(getattr(self.model, "dtype", "?")).removeprefix("torch.")
        return (f"{type(self).__name__}(model={self.source!r}, size={self.size[0]}x{self.size[1]}, "
                f"device={device}, dtype={dtype})")

    def generate(
        self,
        jobs: list[Job],
        options: SamplerOptions = SamplerOptions(),
        seed: int = 42,
        repaint: bool = False,
        crop: bool = True,
        batch_size: int | None = None,
        cache: UncondFeatureCache | None = None,
        intermediate_every: int = 0,
    ) -> PipelineOutput:
        """Sample prepared ``jobs`` in batches of ``batch_size`` (default: all together); each image's randomness
        comes from ``seed`` alone. Jobs with an ``output`` path are also written there."""
        options = options.check()
        if batch_size is not None and batch_size < 1:
            raise LeffaError(f"--batch-size: {batch_size} must be at least 1")
        if repaint and self.task == "pose":
            raise LeffaError("repaint: pose transfer regenerates the whole image; there is nothing to repaint")
        step = batch_size or len(jobs)
        if cache is None and len(jobs) > step:  # reused across this call's batches (it costs memory per step)
            cache = UncondFeatureCache()
        images = []
        for start in range(0, len(jobs), step):
            images += run_jobs(self.model, jobs[start:start + step], self.size, options, seed=seed, crop=crop,
                               use_repaint=repaint, cache=cache, intermediate_every=intermediate_every)
        notes = [note for job in jobs for note in job.notes]
        return PipelineOutput(images, [job.mask for job in jobs], [job.densepose for job in jobs], notes)


def _options(steps, guidance, scheduler, guidance_mode, eta, reference_once) -> SamplerOptions:
    return SamplerOptions(steps=steps, guidance=guidance, guidance_mode=guidance_mode, scheduler=scheduler, eta=eta,
                          reference_once=reference_once).check()


class TryOnPipeline(_Pipeline):
    """Virtual try-on: dress the person in a photo in a garment (``leffa tryon``)."""

    task = "vton"

    def prepare(self, person: Images, garment: Images, mask: Images | None = None, densepose: Images | None = None,
                garment_type: str = "upper_body", outputs: Sequence[str | Path] | None = None,
                mask_style: str = "upstream", mask_grow: int = 0, mask_shrink: int = 0,
                garment_length: float | None = None) -> list[Job]:
        """Read and check the inputs (no sampling): one job per person; a single garment, mask or DensePose serves
        every person. Missing masks and DensePose images come from the automatic conditions, made as the authors'
        app makes them for this model (``mask_style``: ``upstream`` rules or ``tight``); ``mask_grow``,
        ``mask_shrink`` and ``garment_length`` correct the mask (``leffa.mask_edit``)."""
        return prepare_tryon(person, garment, mask, densepose, garment_type, outputs, self.offline, mask_style,
                             conditions_style(self.source), MaskEdit(mask_grow, mask_shrink, garment_length))

    def __call__(
        self,
        person: Images,
        garment: Images,
        mask: Images | None = None,
        densepose: Images | None = None,
        garment_type: str = "upper_body",
        steps: int = 30,
        guidance: float = 2.5,
        seed: int = 42,
        repaint: bool = False,
        *,
        scheduler: str = "ddpm",
        guidance_mode: str = "upstream",
        eta: float = 1.0,
        reference_once: bool = False,
        crop: bool = True,
        batch_size: int | None = None,
        mask_style: str = "upstream",
        mask_grow: int = 0,
        mask_shrink: int = 0,
        garment_length: float | None = None,
    ) -> PipelineOutput:
        """Dress ``person`` (a photo, or a list) in ``garment``; returns the images at the photos' sizes.

        ``mask``: white = region to regenerate, the photo's size (default: automatic for ``garment_type``:
        ``upper_body``, ``lower_body`` or ``dresses``); ``densepose``: the DensePose rendering (default: automatic).
        ``repaint`` keeps the original pixels outside a feathered mask; ``crop`` works on the largest centred crop
        of the working aspect and pastes it back (``False``: resize the whole photo, as upstream).
        ``mask_grow`` / ``mask_shrink`` (pixels, a disk) and ``garment_length`` (fraction of the mask's height kept
        from its top; ``lower_body`` and ``dresses``) correct the mask, given or automatic (``leffa.mask_edit``).
        """
        options = _options(steps, guidance, scheduler, guidance_mode, eta, reference_once)
        jobs = self.prepare(person, garment, mask, densepose, garment_type, mask_style=mask_style,
                            mask_grow=mask_grow, mask_shrink=mask_shrink, garment_length=garment_length)
        return self.generate(jobs, options, seed=seed, repaint=repaint, crop=crop, batch_size=batch_size)


class PosePipeline(_Pipeline):
    """Pose transfer: show a person in the pose of another photo (``leffa pose``)."""

    task = "pose"

    def prepare(self, person: Images, target_pose: Images, densepose: Images | None = None,
                outputs: Sequence[str | Path] | None = None) -> list[Job]:
        """Read and check the inputs: one job per target-pose photo; a single person serves every target."""
        return prepare_pose(person, target_pose, densepose, outputs, self.offline)

    def __call__(
        self,
        person: Images,
        target_pose: Images,
        densepose: Images | None = None,
        steps: int = 30,
        guidance: float = 2.5,
        seed: int = 42,
        *,
        scheduler: str = "ddpm",
        guidance_mode: str = "upstream",
        eta: float = 1.0,
        reference_once: bool = False,
        crop: bool = True,
        batch_size: int | None = None,
    ) -> PipelineOutput:
        """Show ``person`` in the pose of ``target_pose`` (sets the output size); ``densepose`` is the target's
        DensePose IUV image (default: automatic). ``masks`` in the result are all white (everything regenerated)."""
        options = _options(steps, guidance, scheduler, guidance_mode, eta, reference_once)
        jobs = self.prepare(person, target_pose, densepose)
        return self.generate(jobs, options, seed=seed, crop=crop, batch_size=batch_size)


def conditions_style(model) -> str:
    """Which released model automatic conditions are made for: ``dc`` for ``dress_code``, else ``hd``."""
    return "dc" if str(model) == "dress_code" else "hd"


def prepare_tryon(person, garment, mask=None, densepose=None, garment_type="upper_body", outputs=None,
                  offline=False, mask_style="upstream", style="hd", edit: MaskEdit | None = None) -> list[Job]:
    """``TryOnPipeline.prepare`` without a model: the commands check every input before loading one."""
    if edit is not None:
        edit.check(garment_type)
    people = _as_list(person, "person")
    count = len(people)
    garments = _broadcast("garment", garment, count)
    masks, denseposes = _broadcast("mask", mask, count), _broadcast("densepose", densepose, count)
    targets = _matched("outputs", outputs, count)
    return [tryon_job(p, g, o, mask=m, densepose=d, garment_type=garment_type, offline=offline,
                      mask_style=mask_style, style=style, edit=edit)
            for p, g, m, d, o in zip(people, garments, masks, denseposes, targets)]


def prepare_pose(person, target_pose, densepose=None, outputs=None, offline=False) -> list[Job]:
    """``PosePipeline.prepare`` without a model."""
    targets = _as_list(target_pose, "target_pose")
    count = len(targets)
    people, denseposes = _broadcast("person", person, count), _broadcast("densepose", densepose, count)
    paths = _matched("outputs", outputs, count)
    return [pose_job(p, t, o, densepose=d, offline=offline) for p, t, d, o in zip(people, targets, denseposes, paths)]


def _broadcast(name: str, values, count: int) -> list:
    """One value per image: a single value (or ``None``) serves all, a list must have one per image."""
    if values is None or not isinstance(values, (list, tuple)):
        return [values] * count
    return _matched(name, values, count)
