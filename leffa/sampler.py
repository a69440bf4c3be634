"""Sampling: denoise a try-on / pose latent with two UNets, classifier-free guidance and any diffusers scheduler.

The sampler talks to the model only through this protocol (``SamplingModel``), so another backend (e.g. ONNX
Runtime sessions wrapped in an object with the same methods) can be plugged in without touching this module:

- ``encode(images, generator, sample=True) -> latents``: images in [-1, 1] -> scaled VAE latents; ``generator`` is
  a ``torch.Generator`` or a list of them, one per image, used to sample the posterior.
- ``decode(latents) -> images`` in about [-1, 1].
- ``reference_features(reference_latents, t) -> {layer: tokens}``: the reference UNet's normed attn1 inputs.
- ``generative_input(noisy, mask, masked_latents, densepose) -> 12-channel input`` (mask and DensePose resized to
  latent size, nearest).
- ``predict_noise(model_input, t, features) -> noise``.
- ``scaling_factor`` (float), ``config.scheduler`` (the diffusers scheduler config dict), ``device``, ``dtype``.

Upstream semantics (docs/method.md), all available exactly: the masked image is ``person * (mask < 0.5)``; the
unconditional branch uses an all-zeros reference latent and is batched with the conditional one (uncond first);
guidance is ``uncond + s (cond - uncond)`` followed by ``rescale_noise_cfg(..., guidance_rescale=s)``
(``guidance_mode="upstream"``; ``"plain"`` stops after the first part); DDPM from the base folder with eta 1.0;
"reference acceleration" (``reference_once=True``) runs the reference UNet once at ``timesteps[len // 2]``.

What we do differently, none of which changes the numbers beyond float rounding:
- Everything random comes from per-image ``torch.Generator``\\ s seeded with the seed (VAE posterior samples, initial
  noise, scheduler noise, in that order), created on the CPU, so an image depends on its seed alone: not on the
  device, the batch it ran in or its place there.
- The zero reference latent's features depend only on the timestep, so they are computed at batch 1 and broadcast
  (``share_uncond_features``) and can be kept across images in an ``UncondFeatureCache``.
- The scheduler state (latents) stays in float32 whatever the model dtype.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from leffa.errors import LeffaError

if TYPE_CHECKING:
    from leffa.model import LeffaConfig

Features = dict[str, torch.Tensor]
Generators = torch.Generator | list[torch.Generator]

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
}
GUIDANCE_MODES = ("upstream", "plain")


class SamplingModel(Protocol):
    """What the sampler needs from a model (``leffa.model.LeffaModel`` provides it)."""

    scaling_factor: float
    device: torch.device
    dtype: torch.dtype
    config: LeffaConfig

    def encode(self, images: torch.Tensor, generator=None, sample: bool = True) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def reference_features(self, reference_latents: torch.Tensor, timesteps) -> Features: ...

    def generative_input(self, noisy, mask, masked_latents, densepose) -> torch.Tensor: ...

    def predict_noise(self, model_input: torch.Tensor, timesteps, features: Features) -> torch.Tensor: ...


@dataclass(frozen=True)
class SamplerOptions:
    """How to sample. Defaults are upstream's UI defaults (30 DDPM steps, guidance 2.5 with its rescale)."""

    steps: int = 30
    guidance: float = 2.5
    guidance_mode: str = "upstream"
    scheduler: str = "ddpm"
    eta: float = 1.0
    reference_once: bool = False
    share_uncond_features: bool = True

    def check(self) -> SamplerOptions:
        """Refuse any value that would not sample a real image (NaN and infinities included), naming the option."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, int):
            raise LeffaError(f"steps: {self.steps!r} is not a whole number", option="steps")
        for name in ("guidance", "eta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise LeffaError(f"{name}: {value!r} is not a finite number", option=name)
        if self.scheduler not in SCHEDULERS:
            raise LeffaError(
                f"scheduler {self.scheduler!r}: unknown; choose one of {', '.join(SCHEDULERS)}",
                option="scheduler",
            )
        if self.guidance_mode not in GUIDANCE_MODES:
            raise LeffaError(
                f"guidance_mode: unknown mode {self.guidance_mode!r}; choose upstream or plain", option="guidance_mode"
            )
        if not 1 <= self.steps <= 1000:
            raise LeffaError(f"steps: {self.steps} is out of range (1 to 1000)", option="steps")
        if not 0.0 <= self.guidance <= 30.0:
            raise LeffaError(f"guidance: {self.guidance} is out of range (0 to 30)", option="guidance")
        if not 0.0 <= self.eta <= 1.0:
            raise LeffaError(f"eta: {self.eta} is out of range (0 to 1; upstream uses 1)", option="eta")
        return self

    @property
    def uses_guidance(self) -> bool:
        """At scale 1 both guidance modes return the conditional prediction, so the uncond branch is skipped."""
        return self.guidance != 1.0


# -- schedulers ---------------------------------------------------------------------------------------------------


def make_scheduler(name: str, config: dict):
    """A fresh scheduler of kind ``name`` built from a base folder's scheduler config (unknown keys dropped)."""
    if name not in SCHEDULERS:
        raise LeffaError(f"scheduler {name!r}: unknown; choose one of {', '.join(SCHEDULERS)}", option="scheduler")
    cls = SCHEDULERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls.from_config({k: v for k, v in config.items() if k in accepted})


def step_kwargs(scheduler, generator: Generators | None, eta: float) -> dict:
    """The optional ``step`` arguments this scheduler accepts (as upstream's ``prepare_extra_step_kwargs``)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, object] = {}
    if "generator" in accepted:
        kwargs["generator"] = generator
    if "eta" in accepted:
        kwargs["eta"] = eta
    return kwargs


def predicted_original(scheduler, latents: torch.Tensor, noise: torch.Tensor, t, step_output) -> torch.Tensor:
    """The scheduler's estimate of the clean latent at this step (its own when it reports one)."""
    estimate = getattr(step_output, "pred_original_sample", None)
    if estimate is not None:
        return estimate
    alpha = scheduler.alphas_cumprod.to(latents.device)[int(t)].to(latents.dtype)
    return (latents - (1 - alpha).sqrt() * noise) / alpha.sqrt()


# -- guidance -----------------------------------------------------------------------------------------------------


def rescale_noise_cfg(guided: torch.Tensor, cond: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Match the guided prediction's per-sample std to the conditional one's, blended by ``guidance_rescale``."""
    dims = list(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return guidance_rescale * rescaled + (1 - guidance_rescale) * guided


def guide(uncond: torch.Tensor, cond: torch.Tensor, scale: float, mode: str = "upstream") -> torch.Tensor:
    """Classifier-free guidance; ``upstream`` adds upstream's rescale with the guidance scale as the factor."""
    guided = uncond + scale * (cond - uncond)
    if mode == "upstream" and scale > 0.0:
        guided = rescale_noise_cfg(guided, cond, guidance_rescale=scale)
    return guided


# -- reference features -------------------------------------------------------------------------------------------


class UncondFeatureCache:
    """Reference features of the all-zeros latent, keyed by timestep and latent shape (they depend on nothing else).

    Keep one per model and run to skip the uncond reference pass for every image after the first. Memory: one set
    of features per timestep (about 70 MB per step for SD1.5 at 1024x768 in fp16).
    """

    def __init__(self) -> None:
        self._store: dict[tuple, Features] = {}

    def get(self, t, shape) -> Features | None:
        return self._store.get((float(t), tuple(shape)))

    def put(self, t, shape, features: Features) -> None:
        self._store[(float(t), tuple(shape))] = {name: tokens.clone() for name, tokens in features.items()}

    def __len__(self) -> int:
        return len(self._store)


def _split(features: Features, at: int) -> tuple[Features, Features]:
    return {k: v[:at] for k, v in features.items()}, {k: v[at:] for k, v in features.items()}


def reference_step_features(
    model: SamplingModel,
    reference_latents: torch.Tensor,
    t,
    guided: bool,
    share_uncond: bool = True,
    cache: UncondFeatureCache | None = None,
) -> tuple[Features | None, Features]:
    """``(uncond, cond)`` reference features at ``t`` with one reference-UNet call.

    Upstream runs zeros and references as one batch of 2B; with ``share_uncond`` the zeros run once (batch 1) and
    are broadcast, or come from ``cache`` when it already holds them. With a cache the zeros always run alone, so
    the references' features come from the same batch whether the cache was warm or cold: an image's pixels do not
    depend on which batch of a run (or which process of a sharded run) it fell in.
    """
    if not guided:
        return None, model.reference_features(reference_latents, t)
    batch = reference_latents.shape[0]
    zeros_count = 1 if share_uncond else batch
    zeros = torch.zeros(
        (zeros_count, *reference_latents.shape[1:]), dtype=reference_latents.dtype, device=reference_latents.device
    )
    if share_uncond and cache is not None:
        uncond = cache.get(t, reference_latents.shape[1:])
        if uncond is None:
            uncond = model.reference_features(zeros, t)
            cache.put(t, reference_latents.shape[1:], uncond)
        return uncond, model.reference_features(reference_latents, t)
    uncond, cond = _split(model.reference_features(torch.cat([zeros, reference_latents]), t), zeros_count)
    return uncond, cond


def join_features(uncond: Features, cond: Features) -> Features:
    """Per layer ``[uncond; cond]`` along the batch, broadcasting a batch-1 uncond to the cond batch."""
    joined = {}
    for name, tokens in cond.items():
        zero_tokens = uncond[name]
        if zero_tokens.shape[0] != tokens.shape[0]:
            zero_tokens = zero_tokens.expand(tokens.shape[0], *zero_tokens.shape[1:])
        joined[name] = torch.cat([zero_tokens, tokens])
    return joined


def guided_noise(
    model: SamplingModel,
    model_input: torch.Tensor,
    t,
    uncond: Features | None,
    cond: Features,
    options: SamplerOptions,
    batched: bool = True,
) -> torch.Tensor:
    """The guided noise prediction (float32); ``batched`` runs both branches as one batch, as upstream does."""
    if uncond is None:
        return model.predict_noise(model_input, t, cond).float()
    if batched:
        both = model.predict_noise(torch.cat([model_input, model_input]), t, join_features(uncond, cond)).float()
        noise_uncond, noise_cond = both.chunk(2)
    else:
        batch = model_input.shape[0]
        uncond = {k: v.expand(batch, *v.shape[1:]) if v.shape[0] != batch else v for k, v in uncond.items()}
        noise_uncond = model.predict_noise(model_input, t, uncond).float()
        noise_cond = model.predict_noise(model_input, t, cond).float()
    return guide(noise_uncond, noise_cond, options.guidance, options.guidance_mode)


# -- the loop -----------------------------------------------------------------------------------------------------


@dataclass
class EncodedConditions:
    """Everything the denoising loop needs, in latent space (mask and DensePose still at image size)."""

    masked_latents: torch.Tensor
    reference_latents: torch.Tensor
    mask: torch.Tensor
    densepose: torch.Tensor


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes unsigned 64-bit seeds


def check_seed(seed) -> int:
    """``seed`` as an int if a generator takes it (0 to 2^64 - 1), else a one-line error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise LeffaError(f"seed: {seed!r} is out of range (a whole number from 0 to 2^64 - 1)", option="seed")
    return int(seed)


def seeded_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, all seeded with ``seed``: an image's randomness depends on the seed alone."""
    seed = check_seed(seed)
    return [torch.Generator("cpu").manual_seed(seed) for _ in range(count)]


def encode_conditions(
    model: SamplingModel,
    person: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor,
    densepose: torch.Tensor,
    generators: Generators,
) -> EncodedConditions:
    """Encode the masked person (``person * (mask < 0.5)``) then the reference, sampling both posteriors."""
    device = model.device
    person, reference = person.to(device), reference.to(device)
    mask, densepose = mask.to(device), densepose.to(device)
    masked = person * (mask < 0.5)
    return EncodedConditions(
        masked_latents=model.encode(masked, generators, sample=True),
        reference_latents=model.encode(reference, generators, sample=True),
        mask=mask,
        densepose=densepose,
    )


StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
"""``on_step(step_index, timestep, predicted_clean_latents)``, called after each scheduler step."""


def denoise(
    model: SamplingModel,
    conditions: EncodedConditions,
    options: SamplerOptions,
    generators: Generators,
    cache: UncondFeatureCache | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion and return clean latents (float32)."""
    options.check()
    scheduler = make_scheduler(options.scheduler, model.config.scheduler)
    device = model.device
    scheduler.set_timesteps(options.steps, device=device)
    timesteps = scheduler.timesteps
    shape = conditions.masked_latents.shape
    latents = randn_tensor(shape, generator=generators, device=device, dtype=torch.float32)
    latents = latents * scheduler.init_noise_sigma
    extra = step_kwargs(scheduler, generators, options.eta)
    guided = options.uses_guidance
    reference_latents = conditions.reference_latents
    fixed = None
    if options.reference_once:
        fixed = reference_step_features(
            model, reference_latents, timesteps[len(timesteps) // 2], guided, options.share_uncond_features
        )
    for index, t in enumerate(timesteps):
        uncond, cond = fixed or reference_step_features(
            model, reference_latents, t, guided, options.share_uncond_features, cache
        )
        scaled = scheduler.scale_model_input(latents, t)
        model_input = model.generative_input(scaled, conditions.mask, conditions.masked_latents, conditions.densepose)
        noise = guided_noise(model, model_input, t, uncond, cond, options)
        output = scheduler.step(noise, t, latents, **extra, return_dict=True)
        if on_step is not None:
            on_step(index, t, predicted_original(scheduler, latents, noise, t, output))
        latents = output.prev_sample
    return latents


def check_finite(values: torch.Tensor, what: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Refuse NaN/Inf (which would be written as an all-black or all-white image), naming the likely cause."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        share = bad.float().mean().item()
        cause = "the model's weights are probably broken (NaN/Inf in the checkpoint)"
        if dtype in (torch.float16, torch.bfloat16):
            cause = (
                f"{str(dtype).removeprefix('torch.')} probably overflowed (try --dtype fp32), or the model's "
                "weights are broken"
            )
        raise LeffaError(f"the {what} hold NaN/Inf values ({share:.0%} of them): {cause}; nothing was written")
    return values


def decode_images(model: SamplingModel, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> images in [0, 1], float32 on the CPU; NaN/Inf anywhere is a ``LeffaError``, never a black image."""
    dtype = getattr(model, "dtype", None)
    check_finite(latents, "sampled latents", dtype)
    images = check_finite(model.decode(latents).float(), "decoded images", dtype)
    return (images / 2 + 0.5).clamp(0, 1).cpu()


@torch.no_grad()
def sample(
    model: SamplingModel,
    person: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor,
    densepose: torch.Tensor,
    options: SamplerOptions = SamplerOptions(),
    seed: int = 42,
    cache: UncondFeatureCache | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Generate a batch: person/reference/densepose (B,3,H,W) in [-1, 1], mask (B,1,H,W) in {0, 1} -> [0, 1] images.

    Try-on: ``person`` is the photo, ``reference`` the garment, ``mask`` the region to regenerate.
    Pose transfer: ``person`` is the target-pose photo, ``reference`` the person to show, ``mask`` all ones.
    """
    generators = seeded_generators(seed, person.shape[0])
    conditions = encode_conditions(model, person, reference, mask, densepose, generators)
    latents = denoise(model, conditions, options, generators, cache=cache, on_step=on_step)
    return decode_images(model, latents)
