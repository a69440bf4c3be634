"""The Leffa model: a generative and a reference UNet joined through self-attention, plus a VAE.

Both UNets are stock ``diffusers.UNet2DConditionModel``; the VAE is a stock ``AutoencoderKL``. The generative UNet
takes 12 channels (noisy latent 4 | mask 1 | masked-image latent 4 | DensePose 3); the reference UNet takes the
reference latent (4). Cross-attention has no text to attend to and is replaced by a pass-through, as upstream does
(each transformer block still adds ``norm2(h)`` to ``h``). See ``leffa.attention`` for how features flow.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from leffa.attention import (
    DEFAULT_KERNEL,
    AttentionContext,
    ReferenceFeatures,
    install_processors,
    self_attention_names,
    sliced_kernel,
)
from leffa.errors import LeffaError

GENERATIVE_IN_CHANNELS = 12
REFERENCE_IN_CHANNELS = 4

# Config keys diffusers writes that are not constructor arguments.
_PRIVATE_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


@dataclass
class LeffaConfig:
    """Everything needed to rebuild the architecture: the three diffusers configs plus the input widths."""

    unet: dict
    vae: dict
    scheduler: dict
    generative_in_channels: int = GENERATIVE_IN_CHANNELS
    task: str = "vton"
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | Path = "model config") -> LeffaConfig:
        """Parse ``to_json``'s text; damaged or foreign text is a one-line ``LeffaError`` naming ``source``."""
        try:
            values = json.loads(text)
        except ValueError as error:
            raise LeffaError(
                f"{source}: the embedded model config is not valid JSON ({error}); the file is "
                "damaged or was not written by leffa"
            ) from None
        return cls.from_dict(values, source)

    @classmethod
    def from_dict(cls, values, source: str | Path = "model config") -> LeffaConfig:
        """A config from its ``asdict`` form; wrong keys or types are a one-line ``LeffaError`` naming ``source``."""
        if not isinstance(values, dict) or not all(
            isinstance(values.get(k), dict) for k in ("unet", "vae", "scheduler")
        ):
            raise LeffaError(
                f"{source}: the embedded model config lacks its unet/vae/scheduler sections; the file "
                "is damaged or was not written by leffa"
            )
        try:
            return cls(**values)
        except TypeError as error:
            raise LeffaError(f"{source}: the embedded model config does not fit this leffa ({error})") from None

    @classmethod
    def from_base_folder(cls, base: str | Path, task: str = "vton") -> LeffaConfig:
        """Read a diffusers base-model folder (``unet/``, ``vae/``, ``scheduler/`` configs)."""
        base = Path(base)
        if not base.is_dir():
            raise LeffaError(f"{base}: base-model folder not found")
        configs = {}
        for part, name in (("unet", "config.json"), ("vae", "config.json"), ("scheduler", "scheduler_config.json")):
            path = base / part / name
            if not path.is_file():
                raise LeffaError(f"{base}: not a base-model folder (missing {part}/{name})")
            try:
                configs[part] = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise LeffaError(f"{path}: not valid JSON ({error.msg})") from None
        return cls(unet=configs["unet"], vae=configs["vae"], scheduler=configs["scheduler"], task=task)


def _clean(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _PRIVATE_KEYS}


def unet_config(config: LeffaConfig, in_channels: int) -> dict:
    """The base UNet config with ``in_channels`` set and SDXL's unused added (text/time) embedding dropped."""
    unet = _clean(config.unet)
    unet["in_channels"] = in_channels
    if unet.get("addition_embed_type") == "text_time":
        unet["addition_embed_type"] = None
    return unet


class PassThroughCrossAttention(nn.Module):
    """Stands where attn2 was: returns its normed input, exactly what upstream's skip processor computes."""

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return hidden_states


def remove_cross_attention(unet: UNet2DConditionModel) -> None:
    for module in unet.modules():
        if getattr(module, "attn2", None) is not None and not isinstance(module.attn2, PassThroughCrossAttention):
            module.attn2 = PassThroughCrossAttention()


class LeffaModel(nn.Module):
    """Generative UNet + reference UNet + VAE, with the small API the sampler, trainer and exporter share."""

    def __init__(self, config: LeffaConfig):
        super().__init__()
        self.config = config
        self.vae = AutoencoderKL.from_config(_clean(config.vae))
        self.reference_unet = UNet2DConditionModel.from_config(unet_config(config, REFERENCE_IN_CHANNELS))
        self.generative_unet = UNet2DConditionModel.from_config(unet_config(config, config.generative_in_channels))
        for unet in (self.reference_unet, self.generative_unet):
            remove_cross_attention(unet)
        self.reference_context = AttentionContext()
        self.generative_context = AttentionContext()
        install_processors(self.reference_unet, self.reference_context, "reference")
        install_processors(self.generative_unet, self.generative_context, "generative")
        self.layer_names = self_attention_names(self.generative_unet)
        # Set by ``leffa.offload.apply_offload``: the weights live on the CPU (or nowhere) but run on this device.
        self.execution_device: torch.device | None = None

    @classmethod
    def from_base_folder(cls, base: str | Path, task: str = "vton") -> LeffaModel:
        """A randomly initialised model with the architecture of a base-model folder."""
        return cls(LeffaConfig.from_base_folder(base, task=task))

    # -- properties ---------------------------------------------------------------------------------------------

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        """Where the model computes: the offload execution device if one is set, else where its weights are."""
        if self.execution_device is not None:
            return self.execution_device
        return self.generative_unet.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.generative_unet.conv_in.weight.dtype

    def layer_downscale(self) -> dict[str, int]:
        """Image-to-token-grid downscale of every self-attention layer (8, 16, 32, 64 for SD1.5 at 1/8 latents)."""
        levels = len(self.generative_unet.down_blocks) - 1
        scales = {}
        for name in self.layer_names:
            parts = name.split(".")
            if parts[0] == "down_blocks":
                level = int(parts[1])
            elif parts[0] == "up_blocks":
                level = levels - int(parts[1])
            else:
                level = levels
            scales[name] = self.latent_downscale * 2**level
        return scales

    def to_dtype(self, dtype: torch.dtype) -> LeffaModel:
        """Cast the UNets to ``dtype``; a VAE that overflows in fp16 (``force_upcast``, e.g. SDXL's) stays fp32."""
        self.to(dtype)
        if dtype == torch.float16 and self.vae.config.get("force_upcast", False):
            self.vae.to(torch.float32)
        return self

    # -- VAE ----------------------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        """Images in [-1, 1] -> scaled latents. Samples the posterior with ``generator`` unless ``sample=False``."""
        return self.latents_from_moments(self.encode_moments(images), generator, sample)

    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> the VAE posterior's parameters (B, 2 * latent channels, h, w): mean and
        log-variance, as diffusers' ``DiagonalGaussianDistribution`` holds them. Deterministic, so training can keep
        them per sample (``leffa.train.latent_cache``) and still draw a new latent every step."""
        return self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist.parameters

    def latents_from_moments(
        self, moments: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """Posterior parameters (B, 2C, h, w) -> scaled latents (B, C, h, w): a draw with ``generator`` (the same random
        numbers ``encode`` would use) or, with ``sample=False``, the mean."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        posterior = DiagonalGaussianDistribution(moments.to(self.device, self.vae.dtype))
        latents = posterior.sample(generator=generator) if sample else posterior.mode()
        return (latents * self.scaling_factor).to(self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in about [-1, 1] (not clamped)."""
        return self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor).sample

    # -- UNets --------------------------------------------------------------------------------------------------

    @staticmethod
    def _timesteps(timesteps, batch: int, device) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        return timesteps

    def reference_features(self, reference_latents: torch.Tensor, timesteps) -> ReferenceFeatures:
        """Run the reference UNet once and return its normed self-attention inputs, keyed by layer name.

        For classifier-free guidance the unconditional branch uses ``torch.zeros_like(reference_latents)``; its
        features can be computed once with this same call and reused (or concatenated along the batch).
        """
        context = self.reference_context
        context.recorded = {}
        batch = reference_latents.shape[0]
        self.reference_unet(
            reference_latents.to(self.dtype),
            self._timesteps(timesteps, batch, reference_latents.device),
            encoder_hidden_states=None,
            return_dict=False,
        )
        features, context.recorded = context.recorded, {}
        return features

    def predict_noise(
        self,
        model_input: torch.Tensor,
        timesteps,
        features: ReferenceFeatures,
        capture: dict | None = None,
        capture_layers=None,
    ) -> torch.Tensor:
        """Generative UNet on the 12-channel input with the given reference features.

        ``capture``, when given a dict, receives ``{layer: (queries, reference keys)}`` per head for the Leffa loss.
        """
        context = self.generative_context
        context.capture = capture
        context.capture_layers = None if capture_layers is None else frozenset(capture_layers)
        try:
            batch = model_input.shape[0]
            return self.generative_unet(
                model_input.to(self.dtype),
                self._timesteps(timesteps, batch, model_input.device),
                encoder_hidden_states=None,
                cross_attention_kwargs={"reference_features": features},
                return_dict=False,
            )[0]
        finally:
            context.capture = None
            context.capture_layers = None

    def set_upstream_equivalent_attention(self, enabled: bool) -> None:
        """Run queries over all 2n tokens as upstream does (benchmarks only: same result, twice the query cost)."""
        self.generative_context.upstream_equivalent = enabled

    def set_attention_slice(self, queries: int | None) -> None:
        """Compute every UNet self-attention in slices of ``queries`` queries (``None``: all at once).

        Same numbers, a score tensor ``tokens / queries`` times smaller where the attention kernel materialises
        one (PyTorch's math kernel: MPS, or dtypes the fused kernels refuse); see ``leffa.attention.sliced_kernel``.
        """
        if queries is not None and queries < 1:
            raise LeffaError(f"attention_slice {queries}: must be at least 1", option="attention_slice")
        kernel = DEFAULT_KERNEL if queries is None else sliced_kernel(queries)
        for unet in (self.reference_unet, self.generative_unet):
            for processor in unet.attn_processors.values():
                processor.kernel = kernel

    # -- conditions ---------------------------------------------------------------------------------------------

    @staticmethod
    def generative_input(
        noisy_latents: torch.Tensor,
        mask: torch.Tensor,
        masked_latents: torch.Tensor,
        densepose: torch.Tensor,
    ) -> torch.Tensor:
        """Concatenate the 12 input channels; mask and DensePose are resized to latent size (nearest)."""
        size = noisy_latents.shape[-2:]
        dtype = noisy_latents.dtype
        return torch.cat(
            [
                noisy_latents,
                F.interpolate(mask.to(dtype), size=size, mode="nearest"),
                masked_latents.to(dtype),
                F.interpolate(densepose.to(dtype), size=size, mode="nearest"),
            ],
            dim=1,
        )

    def clone_config(self) -> LeffaConfig:
        return copy.deepcopy(self.config)
