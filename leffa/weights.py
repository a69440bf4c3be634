"""Which weights to run: a model name, a local file or folder, or a hub repository, resolved to a ``LeffaModel``.

- ``viton_hd``, ``dress_code``, ``pose_transfer``: upstream's released checkpoints from ``franciszzj/Leffa`` plus the
  configs of their base-model folder, fetched through ``leffa.hub.fetch`` (hub cache; ``offline`` uses the cache).
- ``synth-tiny``: the small model packaged as ``leffa/assets/synth-tiny.safetensors``.
- a ``.safetensors`` file of ours (self-describing), or an upstream ``.pth`` with its base folder (``base=``, or the
  folder of that name beside the file for upstream's file names).
- a folder: one ``.safetensors`` inside, or upstream's layout (``virtual_tryon.pth`` + ``stable-diffusion-inpainting/``).
- ``owner/name``: a hub repository laid out like upstream's; ``owner/name/path/file.safetensors``: one file of ours.

Upstream publishes fp32 pickles only. For an fp16 or bf16 run the pickle is converted once, on first use, into our
safetensors format in that dtype and cached beside the hub cache (``converted_cache_dir``), keyed by the pickle's
content hash; later runs load the half-size file directly.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import torch

from leffa.base_folder import BASE_FILES
from leffa.checkpoint import DTYPES, convert_to_safetensors, load_model
from leffa.errors import LeffaError
from leffa.hub import UPSTREAM_REPO, MissingWeights, fetch, weights_folder
from leffa.model import LeffaModel

if TYPE_CHECKING:
    from leffa.export.backend import OnnxLeffaModel

# resolve_model always gives a LeffaModel; open_model(backend="onnx") an OnnxLeffaModel.
_Model = TypeVar("_Model", bound="LeffaModel | OnnxLeffaModel", covariant=True)

SD15_BASE = "stable-diffusion-inpainting"
SDXL_BASE = "stable-diffusion-xl-1.0-inpainting-0.1"
UPSTREAM_SIZE = (1024, 768)
SYNTH_TINY = "synth-tiny"


@dataclass(frozen=True)
class UpstreamModel:
    checkpoint: str
    base: str
    task: str


UPSTREAM_MODELS = {
    "viton_hd": UpstreamModel("virtual_tryon.pth", SD15_BASE, "vton"),
    "dress_code": UpstreamModel("virtual_tryon_dc.pth", SD15_BASE, "vton"),
    "pose_transfer": UpstreamModel("pose_transfer.pth", SDXL_BASE, "pose"),
}
UPSTREAM_BY_FILE = {spec.checkpoint: spec for spec in UPSTREAM_MODELS.values()}
DEFAULT_MODEL = {"vton": "viton_hd", "pose": "pose_transfer"}


@dataclass
class ResolvedModel(Generic[_Model]):
    """A loaded model, where it came from, and its size: from ``resolve_model`` the size it was trained at (``None``
    if unknown), from ``open_model`` the working size chosen for it."""

    model: _Model
    source: str
    image_size: tuple[int, int] | None
    notes: list[str] = field(default_factory=list)


def trained_size(model: LeffaModel) -> tuple[int, int] | None:
    """``(H, W)`` from ``config.extra["image_size"]`` when the trainer recorded it."""
    size = (model.config.extra or {}).get("image_size")
    if size is None:
        return None
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise LeffaError(f"model config: image_size must be [H, W] in pixels, got {size!r}")
    return int(size[0]), int(size[1])


def _placement_hint(spec: UpstreamModel, repo_id: str) -> str:
    files = ", ".join(f"{spec.base}/{name}" for name in BASE_FILES)
    return (
        f"or place {spec.checkpoint} and {files} from https://huggingface.co/{repo_id} in one folder "
        f"and pass --model FOLDER (or in {weights_folder() / repo_id}/, which is searched first)"
    )


def _fetch_upstream(spec: UpstreamModel, repo_id: str, offline: bool, cache_dir, endpoint) -> tuple[Path, Path]:
    """Configs first (small, so an unreachable hub is reported before a 7 GB download), then the checkpoint."""
    try:
        configs = [
            fetch(f"{spec.base}/{name}", repo_id, offline, cache_dir=cache_dir, endpoint=endpoint)
            for name in BASE_FILES
        ]
        checkpoint = fetch(spec.checkpoint, repo_id, offline, cache_dir=cache_dir, endpoint=endpoint)
    except MissingWeights as error:
        raise LeffaError(
            f"{repo_id}: {spec.checkpoint} and its base-model configs are not on this machine and "
            f"{error.reason}; {_placement_hint(spec, repo_id).removeprefix('or ')}"
        ) from None
    except LeffaError as error:
        raise LeffaError(f"{error}; {_placement_hint(spec, repo_id)}") from None
    return checkpoint, configs[0].parents[1]


def converted_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where converted checkpoints live: ``LEFFA_CONVERTED_CACHE``, else ``leffa-converted/`` beside the hub cache."""
    if os.environ.get("LEFFA_CONVERTED_CACHE"):
        return Path(os.environ["LEFFA_CONVERTED_CACHE"])
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(cache_dir or HF_HUB_CACHE).expanduser().resolve().parent / "leffa-converted"


def _content_key(checkpoint: Path) -> str:
    """The hub cache stores a file as ``blobs/<content hash>`` behind a snapshot link; else size and mtime."""
    blob = checkpoint.resolve()
    if blob.name != checkpoint.name:
        return blob.name
    stat = checkpoint.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def converted_checkpoint(checkpoint: Path, base: Path, task: str, dtype: torch.dtype, cache_dir=None) -> Path:
    """``checkpoint`` (an upstream fp32 pickle) as our safetensors in ``dtype``, converted on first use and cached."""
    name = next(key for key, value in DTYPES.items() if value == dtype)
    target = converted_cache_dir(cache_dir) / _content_key(checkpoint) / f"{checkpoint.stem}.{name}.safetensors"
    if not target.is_file():
        convert_to_safetensors(checkpoint, base, target, dtype=name, task=task)
    return target


def _load_upstream(checkpoint: Path, base_folder: Path, base: Path | None, task: str, dtype, cache_dir) -> LeffaModel:
    """An upstream pickle, through the converted half-precision cache when the run is fp16/bf16 (and no --base)."""
    if base is None and dtype in (torch.float16, torch.bfloat16):
        return load_model(converted_checkpoint(checkpoint, base_folder, task, dtype, cache_dir), dtype=dtype)
    return load_model(checkpoint, base=base or base_folder, task=task, dtype=dtype)


def _upstream_from_folder(folder: Path, task: str) -> tuple[Path, Path] | None:
    names = ["virtual_tryon.pth", "virtual_tryon_dc.pth"] if task == "vton" else ["pose_transfer.pth"]
    for name in names:
        spec = UPSTREAM_BY_FILE[name]
        if (folder / name).is_file() and (folder / spec.base).is_dir():
            return folder / name, folder / spec.base
    return None


def _load_file(path: Path, base: Path | None, task: str, dtype=None) -> LeffaModel:
    """Our safetensors alone, or a foreign state dict with ``base`` (or upstream's base folder beside it)."""
    if base is None and path.name in UPSTREAM_BY_FILE:
        beside = path.parent / UPSTREAM_BY_FILE[path.name].base
        if beside.is_dir():
            base = beside
    return load_model(path, base=base, task=task, dtype=dtype)


def _load_folder(folder: Path, base: Path | None, task: str, dtype=None) -> LeffaModel:
    ours = sorted(folder.glob("*.safetensors"))
    if len(ours) == 1:
        return load_model(ours[0], base=base, task=task, dtype=dtype)
    if len(ours) > 1:
        raise LeffaError(f"{folder}: holds {len(ours)} .safetensors files; pass the one to use")
    upstream = _upstream_from_folder(folder, task)
    if upstream is not None:
        return load_model(upstream[0], base=base or upstream[1], task=task, dtype=dtype)
    if (folder / "manifest.json").is_file():
        raise LeffaError(f"{folder}: is an ONNX export (manifest.json); run it with --backend onnx")
    expected = (
        "virtual_tryon.pth + stable-diffusion-inpainting/"
        if task == "vton"
        else ("pose_transfer.pth + stable-diffusion-xl-1.0-inpainting-0.1/")
    )
    raise LeffaError(f"{folder}: no model found (expected one .safetensors file, or {expected})")


def packaged_synth_tiny(model_task: str, dtype: torch.dtype | None = None) -> LeffaModel:
    """The small packaged model (``leffa/assets/synth-tiny.safetensors``)."""
    resource = importlib.resources.files("leffa").joinpath("assets", "synth-tiny.safetensors")
    if not resource.is_file():
        raise LeffaError("synth-tiny weights are not packaged in this install; pass a model file with --model")
    with importlib.resources.as_file(resource) as path:
        return load_model(path, task=model_task, dtype=dtype)


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) >= 2 and all(parts) and not spec.startswith((".", "~")) and ":" not in spec


def resolve_model(
    spec: str | None,
    task: str = "vton",
    offline: bool = False,
    base: str | Path | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    option: str = "--model",
    dtype: torch.dtype | None = None,
) -> ResolvedModel[LeffaModel]:
    """Load the model named by ``spec`` (see the module docstring) for ``task`` (``vton`` or ``pose``), on the CPU;
    ``option`` is the setting that named it (for messages).

    ``dtype`` is the dtype the model will run in; the weights are loaded in it (default float32), and upstream's
    fp32 pickles go through the converted cache for fp16/bf16.
    """
    spec = spec or DEFAULT_MODEL[task]
    base = Path(base) if base is not None else None
    if spec in UPSTREAM_MODELS:
        upstream = UPSTREAM_MODELS[spec]
        checkpoint, base_folder = _fetch_upstream(upstream, UPSTREAM_REPO, offline, cache_dir, endpoint)
        model = _load_upstream(checkpoint, base_folder, base, upstream.task, dtype, cache_dir)
        resolved = ResolvedModel(model, f"{UPSTREAM_REPO}/{upstream.checkpoint}", UPSTREAM_SIZE)
    elif spec == SYNTH_TINY:
        resolved = ResolvedModel(packaged_synth_tiny(task, dtype), SYNTH_TINY, None)
    elif Path(spec).expanduser().exists():
        path = Path(spec).expanduser()
        model = _load_folder(path, base, task, dtype) if path.is_dir() else _load_file(path, base, task, dtype)
        resolved = ResolvedModel(model, str(path), None)
    elif _looks_like_repo_id(spec):
        resolved = _resolve_repo(spec, task, offline, base, cache_dir, endpoint, dtype)
    else:
        known = ", ".join([*UPSTREAM_MODELS, SYNTH_TINY])
        raise LeffaError(
            f"{option}: {spec!r} is not a known model ({known}), an existing file or folder, "
            "or a hub repository id (owner/name)"
        )
    model = resolved.model
    resolved.image_size = trained_size(model) or resolved.image_size
    if resolved.image_size is None and _is_upstream_architecture(model):
        resolved.image_size = UPSTREAM_SIZE
    if model.config.task != task:
        resolved.notes.append(f"the model was made for {model.config.task!r}, running it for {task!r}")
    return resolved


def _is_upstream_architecture(model: LeffaModel) -> bool:
    """Full-size SD1.5/SDXL UNets (320 base channels) were trained at 1024x768."""
    return list(model.config.unet.get("block_out_channels", []))[:1] == [320]


def _resolve_repo(spec, task, offline, base, cache_dir, endpoint, dtype=None) -> ResolvedModel[LeffaModel]:
    parts = spec.split("/")
    repo_id = "/".join(parts[:2])
    if len(parts) > 2:
        filename = "/".join(parts[2:])
        path = fetch(filename, repo_id, offline, cache_dir=cache_dir, endpoint=endpoint)
        return ResolvedModel(_load_file(path, base, task, dtype), spec, None)
    upstream = UPSTREAM_MODELS[DEFAULT_MODEL[task]]
    checkpoint, base_folder = _fetch_upstream(upstream, repo_id, offline, cache_dir, endpoint)
    model = _load_upstream(checkpoint, base_folder, base, upstream.task, dtype, cache_dir)
    return ResolvedModel(model, f"{repo_id}/{upstream.checkpoint}", UPSTREAM_SIZE)


def open_model(
    spec: str | Path | None,
    task: str = "vton",
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    size: str | tuple[int, int] | None = None,
    base: str | Path | None = None,
    offline: bool = False,
    backend: str = "torch",
    channels_last: bool = False,
    compile: bool = False,
    offload: str = "none",
    attention_slice: int | None = None,
) -> ResolvedModel[LeffaModel | OnnxLeffaModel]:
    """Resolve, load and place a model for inference, and choose its working size: the one loader behind every
    command and ``leffa.TryOnPipeline``/``leffa.PosePipeline``.

    ``offload`` (``model`` / ``sequential``) keeps the weights on the CPU and runs them on ``device`` part by part
    (``leffa.offload``); ``attention_slice`` computes attention in slices of that many queries.

    ``size`` (``"HxW"`` or ``(H, W)``) overrides the working size; otherwise it is the size the model was trained at
    (recorded in its config, or 1024x768 for upstream's architecture), else 1024x768 with a note. ``backend="onnx"``
    runs a ``leffa export --onnx`` folder with onnxruntime (device and dtype were fixed at export time). The result's
    ``image_size`` is the working size, checked against what the model (or the exported graphs) can run.
    """
    from leffa.images import parse_size
    from leffa.offload import check_offload
    from leffa.pipeline import check_size
    from leffa.runtime import place_model, resolve_device, resolve_dtype

    if backend not in ("torch", "onnx"):
        raise LeffaError(f"--backend {backend!r}: choose torch or onnx")
    check_offload(offload)
    if attention_slice is not None and attention_slice < 1:
        raise LeffaError(f"attention_slice {attention_slice}: must be at least 1", option="attention_slice")
    working = parse_size(size) if size is not None else None
    if backend == "onnx":
        return _open_onnx(spec, working)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    resolved = resolve_model(
        None if spec is None else str(spec), task=task, offline=offline, base=base, dtype=torch_dtype
    )
    if working is None:
        working = resolved.image_size
        if working is None:
            working = UPSTREAM_SIZE
            resolved.notes.append(f"{resolved.source}: no trained size recorded; working at 1024x768 (see --size)")
    resolved.image_size = check_size(working, resolved.model.latent_downscale)
    resolved.model.set_attention_slice(attention_slice)
    if offload != "none" and torch_device.type == "cpu":
        resolved.notes.append(f"offload {offload}: saves accelerator memory; on the CPU it only adds overhead")
    resolved.model = place_model(resolved.model, torch_device, torch_dtype, channels_last, compile, offload)
    return resolved


def _open_onnx(spec, working: tuple[int, int] | None) -> ResolvedModel[OnnxLeffaModel]:
    from leffa.export.backend import OnnxLeffaModel
    from leffa.pipeline import check_size

    if spec is None:
        raise LeffaError("--backend onnx needs --model EXPORT_DIR (a folder written by `leffa export --onnx`)")
    model = OnnxLeffaModel(spec)
    notes = []
    if working is None:
        working = model.image_size
        if working is None:
            working = UPSTREAM_SIZE
            notes.append(f"{spec}: no size recorded in the export; working at 1024x768 (see --size)")
    check_size(working, model.latent_downscale)
    return ResolvedModel(model, str(spec), model.check_size(working), notes)
