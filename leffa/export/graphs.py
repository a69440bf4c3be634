"""Export for deployment: four ONNX graphs plus a manifest, and upstream ``.pth`` -> safetensors conversion.

The graphs are the reference UNet (latent, timestep -> its per-layer features, one named output per layer), the
generative UNet (12-channel sample, timestep, those features as named inputs -> noise), the VAE encoder (image ->
posterior mean and logvar, so the sampler samples with its own generator) and the VAE decoder (unscaled latent ->
image). ``manifest.json`` records names, shapes, dtypes, every file's size and SHA-256 and the ``LeffaConfig``, so
``leffa.export.backend`` needs nothing else and can tell a damaged or mixed folder from a good one.

The export folder is replaced as a whole: the graphs and the manifest are written into a hidden sibling folder,
which is swapped in only when complete (``leffa.atomic.replace_folder``), under a lock beside it so two exports of
one folder cannot interleave. A killed re-export therefore leaves the previous complete folder untouched.

TensorRT refuses tensors of 2^31 elements or more. An explicit attention score tensor at 1024x768 with CFG is
``2 x 8 x 12288 x 24576`` elements, so attention exports either as ONNX's fused ``Attention`` op (opset 23, parsed
by TensorRT >= 10.14) or, by default, as query chunks: a copy of the model gets processors that split the queries
into enough pieces that each score chunk stays under a budget at the largest shape the graph is meant for.
"""

from __future__ import annotations

import copy
import gc
import json
import math
import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from leffa.atomic import atomic_path, ensure_writable_destination, replace_folder
from leffa.attention import install_processors, install_vae_attention
from leffa.checkpoint import convert_to_safetensors  # noqa: F401 - its home is leffa.checkpoint; kept importable here
from leffa.errors import LeffaError
from leffa.export.manifest import MANIFEST, MANIFEST_FORMAT, read_manifest, write_manifest
from leffa.integrity import describe_files
from leffa.locks import FolderLock
from leffa.model import LeffaModel

TENSORRT_ELEMENT_LIMIT = 2**31
GRAPHS = ("reference_unet", "generative_unet", "vae_encoder", "vae_decoder")
ATTENTION_MODES = ("chunked", "fused")
EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 11: "float64"}
# Fused Attention first appears in opset 23; the chunked path needs only opset 17 (LayerNormalization).
OPSET = {"fused": 23, "chunked": 17}
EXTERNAL_DATA_BYTES = 2 * 1024**3


@dataclass
class ExportOptions:
    """How to export. ``height``/``width`` fix the image size (both or neither); ``None`` keeps them dynamic.

    ``max_batch``, ``max_height`` and ``max_width`` describe the largest run the graphs must serve (CFG doubles
    the batch); chunked attention splits queries so that each score chunk at that size holds at most
    ``max_score_elements`` (kept below TensorRT's 2^31 limit).
    """

    dtype: str = "fp32"
    attention: str = "chunked"
    height: int | None = None
    width: int | None = None
    max_batch: int = 2
    max_height: int = 1024
    max_width: int = 768
    max_score_elements: int = 2**30

    def validate(self, multiple: int) -> None:
        if self.dtype not in EXPORT_DTYPES:
            raise LeffaError(f"dtype {self.dtype!r}: choose one of {', '.join(EXPORT_DTYPES)}", option="dtype")
        if self.attention not in ATTENTION_MODES:
            raise LeffaError(
                f"attention {self.attention!r}: choose one of {', '.join(ATTENTION_MODES)}", option="attention"
            )
        if (self.height is None) != (self.width is None):
            raise LeffaError(
                "height and width: give both to fix the image size, or neither to keep it dynamic",
                option=("height", "width"),
            )
        for name in ("height", "width", "max_height", "max_width"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or value % multiple):
                raise LeffaError(f"{name} {value}: must be a positive multiple of {multiple}", option=name)
        if self.max_batch < 1:
            raise LeffaError(f"max_batch {self.max_batch}: must be at least 1", option="max_batch")
        if not 0 < self.max_score_elements < TENSORRT_ELEMENT_LIMIT:
            raise LeffaError(f"max_score_elements {self.max_score_elements}: must be in (0, 2^31)")

    @property
    def profile(self) -> tuple[int, int]:
        """The largest image size the graphs serve: the fixed size, or the declared maximum."""
        if self.height is not None and self.width is not None:
            return self.height, self.width
        return self.max_height, self.max_width


# -- chunked attention ----------------------------------------------------------------------------------------------


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunks: int) -> torch.Tensor:
    """Softmax attention with the queries cut into ``chunks`` slices: each score tensor is 1/chunks of the whole.

    Plain Slice/MatMul/Softmax/MatMul per slice, which every ONNX consumer (TensorRT included) parses; the slice
    bounds are computed from the traced token count, so one graph serves any size.
    """
    scale = q.shape[-1] ** -0.5
    key_t = k.transpose(-1, -2)
    if chunks <= 1:
        return torch.matmul(torch.softmax(torch.matmul(q * scale, key_t), dim=-1), v)
    tokens = q.shape[2]
    size = (tokens + chunks - 1) // chunks
    outs = []
    for index in range(chunks):
        piece = q[:, :, index * size : (index + 1) * size]
        outs.append(torch.matmul(torch.softmax(torch.matmul(piece * scale, key_t), dim=-1), v))
    return torch.cat(outs, dim=2)


def chunks_needed(batch: int, heads: int, queries: int, keys: int, budget: int) -> int:
    """Fewest query chunks so that ``batch x heads x (queries / chunks) x keys`` stays within ``budget``."""
    per_query = batch * heads * keys
    if per_query > budget:
        raise LeffaError(
            f"attention over {keys} keys with batch {batch} and {heads} heads cannot stay under {budget} elements "
            "even one query at a time; lower max_batch or the maximum size",
            option="max_batch",
        )
    return max(1, math.ceil(batch * heads * queries * keys / budget))


def attention_chunks(model: LeffaModel, options: ExportOptions) -> dict[str, int]:
    """Query chunks per UNet self-attention layer (``reference:`` / ``generative:`` prefixed) and the VAE."""
    height, width = options.profile
    heads = {name: module.heads for name, module in model.generative_unet.named_modules() if name in model.layer_names}
    chunks = {}
    for name, downscale in model.layer_downscale().items():
        tokens = (height // downscale) * (width // downscale)
        budget, batch = options.max_score_elements, options.max_batch
        chunks[f"reference:{name}"] = chunks_needed(batch, heads[name], tokens, tokens, budget)
        chunks[f"generative:{name}"] = chunks_needed(batch, heads[name], tokens, 2 * tokens, budget)
    latent_tokens = (height // model.latent_downscale) * (width // model.latent_downscale)
    chunks["vae"] = chunks_needed(options.max_batch, 1, latent_tokens, latent_tokens, options.max_score_elements)
    return chunks


def install_chunked_attention(model: LeffaModel, chunks: dict[str, int]) -> None:
    """Give every attention processor of ``model`` (a copy: it is changed in place) a query-chunked kernel."""
    for role, unet, context in (
        ("reference", model.reference_unet, model.reference_context),
        ("generative", model.generative_unet, model.generative_context),
    ):
        kernels = {layer: partial(chunked_attention, chunks=chunks[f"{role}:{layer}"]) for layer in model.layer_names}
        install_processors(unet, context, role, kernels)
    install_vae_attention(model.vae, partial(chunked_attention, chunks=chunks["vae"]))


# -- graph wrappers -------------------------------------------------------------------------------------------------


class ReferenceUNetGraph(nn.Module):
    """(latent, timestep) -> one tensor per self-attention layer, in ``model.layer_names`` order."""

    def __init__(self, model: LeffaModel):
        super().__init__()
        self.model = model

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor):
        features = self.model.reference_features(latent, timestep)
        return tuple(features[name] for name in self.model.layer_names)


class GenerativeUNetGraph(nn.Module):
    """(12-channel sample, timestep, features in layer order) -> predicted noise."""

    def __init__(self, model: LeffaModel):
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, *features: torch.Tensor):
        return self.model.predict_noise(sample, timestep, dict(zip(self.model.layer_names, features)))


class VaeEncoderGraph(nn.Module):
    """Image in [-1, 1] -> posterior mean and logvar (unscaled); sampling stays with the caller's generator."""

    def __init__(self, model: LeffaModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, image: torch.Tensor):
        posterior = self.vae.encode(image).latent_dist
        return posterior.mean, posterior.logvar


class VaeDecoderGraph(nn.Module):
    """Unscaled latent -> image in about [-1, 1]."""

    def __init__(self, model: LeffaModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, latent: torch.Tensor):
        return self.vae.decode(latent).sample


def feature_name(layer: str) -> str:
    """The ONNX tensor name of a layer's reference features (the layer name itself: unique and readable)."""
    return layer


@dataclass
class GraphSpec:
    """One graph: its wrapper, example inputs, and the names and dynamic axes of its inputs and outputs."""

    name: str
    module: nn.Module
    inputs: tuple
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def graph_specs(model: LeffaModel, options: ExportOptions, batch: int = 1) -> list[GraphSpec]:
    """The four graphs, traced at the fixed export size (or at the declared maximum's aspect when dynamic)."""
    down = model.latent_downscale
    if options.height is not None and options.width is not None:
        height, width = options.height, options.width
    else:
        # Traced where the latent does not divide by the UNet's total downscale: the UNet then upsamples each level
        # to its skip connection's size (diffusers' forward_upsample_size), which the graph keeps as a shape op, so
        # the dynamic graphs serve every multiple of the VAE's downscale (64x48 too), aligned or not.
        unet_multiple = 2 ** (len(model.generative_unet.down_blocks) - 1)
        height, width = down * (2 * unet_multiple + 1), down * (2 * unet_multiple + 1)
    lh, lw = height // down, width // down
    dynamic_size = options.height is None
    lat = {0: "batch", 2: "latent_height", 3: "latent_width"} if dynamic_size else {0: "batch"}
    img = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    tokens = {0: "batch", 1: "tokens"} if dynamic_size else {0: "batch"}
    timestep = torch.full((batch,), 500.0)
    latent = torch.randn(batch, 4, lh, lw, dtype=model.dtype)
    with torch.no_grad():
        features = model.reference_features(latent, timestep)
    names = [feature_name(name) for name in model.layer_names]
    values = tuple(features[name] for name in model.layer_names)
    # Token axes differ per resolution level; give each its own symbol so consumers do not tie them together.
    feature_axes = {
        name: {k: (f"{v}_{model.layer_downscale()[layer]}" if v == "tokens" else v) for k, v in tokens.items()}
        for name, layer in zip(names, model.layer_names)
    }
    sample = torch.randn(batch, model.config.generative_in_channels, lh, lw, dtype=model.dtype)
    vae_dtype = model.vae.dtype
    latent_channels = model.vae.config.latent_channels
    return [
        GraphSpec(
            "reference_unet",
            ReferenceUNetGraph(model),
            (latent, timestep),
            ["latent", "timestep"],
            names,
            {"latent": lat, "timestep": {0: "batch"}, **feature_axes},
        ),
        GraphSpec(
            "generative_unet",
            GenerativeUNetGraph(model),
            (sample, timestep, *values),
            ["sample", "timestep", *names],
            ["noise"],
            {"sample": lat, "timestep": {0: "batch"}, **feature_axes, "noise": lat},
        ),
        GraphSpec(
            "vae_encoder",
            VaeEncoderGraph(model),
            (torch.randn(batch, 3, height, width, dtype=vae_dtype),),
            ["image"],
            ["mean", "logvar"],
            {"image": img, "mean": lat, "logvar": lat},
        ),
        GraphSpec(
            "vae_decoder",
            VaeDecoderGraph(model),
            (torch.randn(batch, latent_channels, lh, lw, dtype=vae_dtype),),
            ["latent"],
            ["image"],
            {"latent": lat, "image": img},
        ),
    ]


# -- export ---------------------------------------------------------------------------------------------------------


@contextmanager
def _quiet_exporter():
    """The exporter logs progress and warns about optional packages (torchvision); keep library output silent."""
    import logging

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_model_copy(model: LeffaModel, options: ExportOptions) -> tuple[LeffaModel, dict[str, int]]:
    """A copy of ``model`` in the export dtype, with chunked attention installed when asked for."""
    export_model = copy.deepcopy(model).eval().to_dtype(EXPORT_DTYPES[options.dtype])
    chunks = {}
    if options.attention == "chunked":
        chunks = attention_chunks(export_model, options)
        install_chunked_attention(export_model, chunks)
    return export_model, chunks


def _tensor_info(value_info) -> dict:
    tensor = value_info.type.tensor_type
    shape = [dim.dim_param if dim.dim_param else dim.dim_value for dim in tensor.shape.dim]
    return {"name": value_info.name, "dtype": ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)), "shape": shape}


def export_graph(spec: GraphSpec, path: Path, opset: int) -> dict:
    """Export one graph to ``path``; its weights go to ``<file>.data`` beside it when they pass 2 GB.

    Chunked graphs use the TorchScript exporter (fast, and its Slice/MatMul/Softmax output parses everywhere); the
    fused ``Attention`` op exists only in the dynamo exporter (opset 23). The graph is first written into a
    staging folder and then re-saved, so a failed export never leaves a half graph under the final name.
    """
    import shutil
    import tempfile

    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        staged = staging / path.name
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                spec.module,
                spec.inputs,
                str(staged),
                dynamo=opset >= 23,
                opset_version=opset,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes,
                do_constant_folding=True,
                verbose=False,
            )
        proto = onnx.load(str(staged))
        weight_bytes = sum(len(init.raw_data) for init in proto.graph.initializer)
        external = weight_bytes >= EXTERNAL_DATA_BYTES
        files = [path.name]
        if external:
            data = path.with_name(path.name + ".data")
            onnx.save_model(
                proto,
                str(staging / "final.onnx"),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data.name,
                size_threshold=1024,
            )
            os.replace(staging / data.name, data)
            os.replace(staging / "final.onnx", path)
            files.append(data.name)
        else:
            with atomic_path(path) as temp:
                onnx.save_model(proto, str(temp))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    graph = proto.graph
    info = {
        "file": path.name,
        "files": files,
        "external_data": external,
        "inputs": [_tensor_info(value) for value in graph.input],
        "outputs": [_tensor_info(value) for value in graph.output],
    }
    del proto
    gc.collect()
    return info


def export_onnx(
    model: LeffaModel,
    directory: str | Path,
    options: ExportOptions | None = None,
    graphs: tuple[str, ...] = GRAPHS,
) -> dict:
    """Export the graphs of ``model`` into ``directory`` and write ``manifest.json``; returns the manifest."""
    options = options or ExportOptions()
    options.validate(model.latent_downscale)
    unknown = [name for name in graphs if name not in GRAPHS]
    if unknown:
        raise LeffaError(f"unknown graph {unknown[0]!r}; choose from {', '.join(GRAPHS)}")
    directory = check_export_destination(directory)
    with FolderLock(
        directory.parent / f".{directory.name}.lock", str(directory), hint="; another export is writing it"
    ):
        for stale in directory.parent.glob(f".{directory.name}.partial-*"):  # left by a killed export
            shutil.rmtree(stale, ignore_errors=True)
        with replace_folder(directory) as staging:
            manifest = _export_into(model, staging, options, graphs)
    return manifest


def export_folder_entries(directory: Path) -> list[str]:
    """Entries of an existing folder that an export did not write (empty: safe to replace as a whole)."""
    if not directory.is_dir():
        return []
    ours = (MANIFEST,)
    return sorted(
        entry.name
        for entry in directory.iterdir()
        if entry.name not in ours
        and not entry.name.endswith((".onnx", ".onnx.data"))
        and not entry.name.startswith(".")
    )


def check_export_destination(directory: str | Path) -> Path:
    """Refuse, before loading anything, an export folder that cannot be written or holds other files.

    The folder is replaced as a whole, so a folder holding anything but a previous export's files is refused
    rather than emptied."""
    directory = ensure_writable_destination(directory, "whole-folder", "--onnx")
    foreign = export_folder_entries(directory)
    if foreign:
        raise LeffaError(
            f"--onnx {directory}: holds files that are not an export ({', '.join(foreign[:3])}); an export "
            "replaces its folder as a whole, so give a new or empty folder"
        )
    return directory


def _export_into(model: LeffaModel, directory: Path, options: ExportOptions, graphs: tuple[str, ...]) -> dict:
    export_model, chunks = export_model_copy(model, options)
    opset = OPSET[options.attention]
    specs = {spec.name: spec for spec in graph_specs(export_model, options)}
    exported = {name: export_graph(specs[name], directory / f"{name}.onnx", opset) for name in graphs}
    files = [file for info in exported.values() for file in info["files"]]
    manifest = {
        "format": MANIFEST_FORMAT,
        "dtype": options.dtype,
        "unet_dtype": str(export_model.dtype).removeprefix("torch."),
        "vae_dtype": str(export_model.vae.dtype).removeprefix("torch."),
        "opset": opset,
        "options": asdict(options),
        "attention_chunks": chunks,
        "scaling_factor": export_model.scaling_factor,
        "latent_downscale": export_model.latent_downscale,
        # Dynamic graphs upsample to their skip connections' sizes (see graph_specs): any multiple of the VAE's scale.
        "size_multiple": export_model.latent_downscale,
        "layer_names": list(export_model.layer_names),
        "layer_downscale": export_model.layer_downscale(),
        "graphs": exported,
        "checksums": describe_files(directory, files),
        "leffa_config": json.loads(model.config.to_json()),
    }
    write_manifest(directory, manifest)  # last: its presence marks the folder complete
    return manifest


# -- sizes ----------------------------------------------------------------------------------------------------------


def tensor_sizes(graph: str | Path, input_shapes: dict[str, list[int]]) -> dict[str, tuple[str, int]]:
    """Element count of every tensor in ``graph`` when its inputs have ``input_shapes``: ``{name: (op, count)}``.

    Uses onnxruntime's symbolic shape inference, which propagates the Shape/Slice arithmetic of chunked attention
    (plain ONNX shape inference leaves those dims unknown), so a dynamic graph exported at a small size can be
    checked at 1024x768 without running it. Weights are not needed and the graph is not executed.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    proto = onnx.load(str(graph), load_external_data=False)
    for value in proto.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, input_shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    producer = {out: node.op_type for node in inferred.graph.node for out in node.output}
    sizes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            sizes[value.name] = (producer.get(value.name, "input"), math.prod(dim.dim_value for dim in dims))
        else:
            sizes[value.name] = (producer.get(value.name, "input"), -1)
    return sizes


# -- check ----------------------------------------------------------------------------------------------------------


def check_export(
    model: LeffaModel,
    directory: str | Path,
    batch: int = 2,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    providers: list[str] | None = None,
) -> dict[str, float]:
    """Run each exported graph with onnxruntime and torch on the same random inputs: max abs difference per graph.

    Torch runs the original model (fused attention) in the export dtype, so the check also covers the chunked
    attention rewrite. Sizes default to the fixed export size, or the smallest valid size for dynamic graphs.
    """
    from leffa.export.backend import OnnxLeffaModel

    manifest = read_manifest(directory)
    options = ExportOptions(**manifest["options"])
    multiple = model.latent_downscale * 2 ** (len(model.generative_unet.down_blocks) - 1)
    if height is None or width is None:
        height, width = options.profile if options.height is not None else (2 * multiple, multiple)
    onnx_model = OnnxLeffaModel(directory, providers=providers)
    reference = copy.deepcopy(model).eval().to_dtype(EXPORT_DTYPES[options.dtype])
    generator = torch.Generator().manual_seed(seed)
    lh, lw = height // model.latent_downscale, width // model.latent_downscale
    image = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    latent = torch.randn(batch, 4, lh, lw, generator=generator)
    sample = torch.randn(batch, model.config.generative_in_channels, lh, lw, generator=generator)
    timestep = torch.tensor([999.0, 1.0] * batch)[:batch]
    diffs = {}

    def diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b.float()).abs().max())

    with torch.no_grad():
        present = manifest["graphs"]
        if "reference_unet" in present:
            expected_features = reference.reference_features(latent, timestep)
            got = onnx_model.reference_features(latent, timestep)
            diffs["reference_unet"] = max(diff(got[name], expected_features[name]) for name in reference.layer_names)
        if "generative_unet" in present:
            features = reference.reference_features(latent, timestep)
            expected = reference.predict_noise(sample, timestep, features)
            diffs["generative_unet"] = diff(onnx_model.predict_noise(sample, timestep, features), expected)
        if "vae_encoder" in present:
            posterior = reference.vae.encode(image.to(reference.vae.dtype)).latent_dist
            mean, logvar = onnx_model.posterior(image)
            diffs["vae_encoder"] = max(diff(mean, posterior.mean), diff(logvar, posterior.logvar))
        if "vae_decoder" in present:
            expected = reference.decode(latent)
            diffs["vae_decoder"] = diff(onnx_model.decode(latent), expected)
    return diffs
