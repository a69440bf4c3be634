"""ONNX Runtime backend: the ``LeffaModel`` API over the graphs of ``leffa export --onnx``.

The sampler talks to the model only through ``encode``, ``decode``, ``reference_features``, ``generative_input``,
``predict_noise``, ``scaling_factor``, ``config``, ``dtype`` and ``device``; this class offers the same methods, so
the same sampler code runs on onnxruntime. Tensors go in and come out as CPU torch tensors; the random numbers
(initial noise, VAE posterior samples) stay in torch with the caller's generator, which is why the encoder graph
returns the posterior mean and logvar rather than a sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from leffa.errors import LeffaError
from leffa.export.manifest import MANIFEST, read_manifest
from leffa.integrity import file_problem
from leffa.model import LeffaConfig, LeffaModel

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(double)": np.float64,
}


def default_providers() -> list[str]:
    """TensorRT, then CUDA, then CPU: whichever this onnxruntime build offers, in that order of preference."""
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    return [name for name in PREFERRED_PROVIDERS if name in available]


ORT_TYPE_NAMES = {"float": "float32", "double": "float64"}


def _type_name(ort_type: str) -> str:
    """onnxruntime's ``tensor(float16)`` as the manifest writes it (``float16``)."""
    name = ort_type.removeprefix("tensor(").removesuffix(")")
    return ORT_TYPE_NAMES.get(name, name)


def check_files(directory: Path, info: dict, checksums: dict, hashes: bool = True) -> None:
    """Every file of one graph is there with the size (and SHA-256) the manifest recorded, else a one-line error.

    This is what tells a folder mixed by an interrupted export, or a damaged graph, from a good one."""
    for name in info["files"]:
        if name not in checksums:
            raise LeffaError(f"{directory / name}: not recorded in {directory / MANIFEST}; export the model again")
        problem = file_problem(directory, name, checksums[name], hashes)
        if problem:
            raise LeffaError(f"{directory}: {problem}; the export folder is damaged or mixed, export the model again")


def check_signature(path: Path, session, info: dict) -> None:
    """The session's inputs and outputs have the names, dtypes and shapes the manifest recorded."""
    for kind, values in (("input", session.get_inputs()), ("output", session.get_outputs())):
        expected = info[kind + "s"]
        actual = [{"name": v.name, "dtype": _type_name(v.type), "shape": list(v.shape)} for v in values]
        if [v["name"] for v in actual] != [v["name"] for v in expected]:
            raise LeffaError(f"{path}: its {kind}s are not those in the manifest; export the model again")
        for have, want in zip(actual, expected):
            same_shape = len(have["shape"]) == len(want["shape"]) and all(
                a == b or a in (None, 0) or b in (None, 0) for a, b in zip(have["shape"], want["shape"])
            )
            if have["dtype"] != want["dtype"] or not same_shape:
                raise LeffaError(
                    f"{path}: {kind} {have['name']} is {have['dtype']} {have['shape']}, the manifest says "
                    f"{want['dtype']} {want['shape']}; the export folder is mixed or damaged, export the model again"
                )


class _Graph:
    """One onnxruntime session plus the dtypes its inputs expect, checked against its manifest entry."""

    def __init__(
        self,
        directory: Path,
        info: dict,
        checksums: dict,
        providers: list[str],
        threads: int | None,
        verify: bool = True,
    ):
        import onnxruntime

        path = directory / info["file"]
        check_files(directory, info, checksums, hashes=verify)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            raise LeffaError(f"{path}: onnxruntime cannot load this graph ({str(error).splitlines()[0]})") from None
        check_signature(path, self.session, info)
        self.input_types = {value.name: ORT_TYPES[value.type] for value in self.session.get_inputs()}
        self.output_names = [value.name for value in self.session.get_outputs()]

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        feed = {
            name: np.ascontiguousarray(inputs[name].detach().cpu().numpy().astype(dtype, copy=False))
            for name, dtype in self.input_types.items()
        }
        return [torch.from_numpy(np.asarray(out)) for out in self.session.run(self.output_names, feed)]


class OnnxLeffaModel:
    """The Leffa model run by onnxruntime from an export folder (``manifest.json`` + four ``.onnx`` graphs).

    Every graph file is checked against the manifest before it is loaded: size and SHA-256 (``verify``; reading
    the files once more costs about a second per GB) and, once loaded, input/output names, dtypes and shapes.
    """

    def __init__(
        self, directory: str | Path, providers: list[str] | None = None, threads: int | None = None, verify: bool = True
    ):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.config = LeffaConfig.from_dict(self.manifest["leffa_config"], self.directory / "manifest.json")
        self.providers = list(providers) if providers else default_providers()
        self.layer_names = list(self.manifest["layer_names"])
        self._layer_downscale = dict(self.manifest["layer_downscale"])
        self._graphs = {
            name: _Graph(self.directory, info, self.manifest["checksums"], self.providers, threads, verify)
            for name, info in self.manifest["graphs"].items()
        }

    # -- properties, mirroring LeffaModel -------------------------------------------------------------------------

    @property
    def scaling_factor(self) -> float:
        return float(self.manifest["scaling_factor"])

    @property
    def latent_downscale(self) -> int:
        return int(self.manifest["latent_downscale"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.manifest["unet_dtype"])

    @property
    def image_size(self) -> tuple[int, int] | None:
        """The size the graphs were fixed to, else the trained size recorded in the config, else ``None``."""
        options = self.manifest["options"]
        if options.get("height") is not None:
            return int(options["height"]), int(options["width"])
        size = (self.config.extra or {}).get("image_size")
        return (int(size[0]), int(size[1])) if size else None

    def check_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Refuse a working size the exported graphs cannot run, naming the option to change."""
        options = self.manifest["options"]
        if options.get("height") is not None:
            fixed = (int(options["height"]), int(options["width"]))
            if tuple(size) != fixed:
                raise LeffaError(
                    f"size {size[0]}x{size[1]}: {self.directory} was exported for {fixed[0]}x{fixed[1]} only; "
                    "export again with other height/width, or without them (dynamic)",
                    option=("size", "height", "width"),
                )
            return size
        multiple = int(self.manifest["size_multiple"])
        if size[0] % multiple or size[1] % multiple:
            raise LeffaError(
                f"size {size[0]}x{size[1]}: {self.directory} has dynamic-size graphs, which need multiples of "
                f"{multiple}; choose such multiples or export with height/width",
                option=("size", "height", "width"),
            )
        return size

    def layer_downscale(self) -> dict[str, int]:
        return dict(self._layer_downscale)

    def eval(self) -> OnnxLeffaModel:
        return self

    def to(self, *args, **kwargs) -> OnnxLeffaModel:
        """Kept for API compatibility: onnxruntime picks devices through its execution providers."""
        return self

    def _graph(self, name: str) -> _Graph:
        if name not in self._graphs:
            raise LeffaError(f"{self.directory}: the export has no {name} graph; export it with `leffa export --onnx`")
        return self._graphs[name]

    # -- VAE ------------------------------------------------------------------------------------------------------

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and logvar (unscaled) of images in [-1, 1]."""
        mean, logvar = self._graph("vae_encoder")(image=images)
        return mean, logvar

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        """Images in [-1, 1] -> scaled latents, sampled with ``generator`` exactly as diffusers samples."""
        mean, logvar = self.posterior(images)
        posterior = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
        latents = posterior.sample(generator=generator) if sample else posterior.mode()
        return (latents * self.scaling_factor).to(self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in about [-1, 1] (not clamped)."""
        return self._graph("vae_decoder")(latent=latents / self.scaling_factor)[0].float()

    # -- UNets ----------------------------------------------------------------------------------------------------

    def reference_features(self, reference_latents: torch.Tensor, timesteps) -> dict[str, torch.Tensor]:
        """Run the reference graph once: ``{layer: (B, n, d)}``."""
        timesteps = LeffaModel._timesteps(timesteps, reference_latents.shape[0], "cpu")
        outputs = self._graph("reference_unet")(latent=reference_latents, timestep=timesteps)
        return dict(zip(self.layer_names, outputs))

    def predict_noise(self, model_input, timesteps, features, capture=None, capture_layers=None) -> torch.Tensor:
        """Generative graph on the 12-channel input with the given reference features."""
        if capture is not None:
            raise LeffaError(
                "ONNX graphs cannot capture attention (Leffa loss, flow maps); use backend torch", option="backend"
            )
        missing = [name for name in self.layer_names if name not in features]
        if missing:
            raise LeffaError(f"no reference features for layer {missing[0]}; compute them first")
        timesteps = LeffaModel._timesteps(timesteps, model_input.shape[0], "cpu")
        return self._graph("generative_unet")(sample=model_input, timestep=timesteps, **features)[0].to(self.dtype)

    def generative_input(self, noisy_latents, mask, masked_latents, densepose) -> torch.Tensor:
        """Concatenate the 12 input channels exactly as ``LeffaModel.generative_input`` does."""
        return LeffaModel.generative_input(noisy_latents, mask, masked_latents, densepose)
