"""The one attention probe: a forward pass at timestep t that records where every generative self-attention layer
looks. Training validation (``leffa.train.loop``), ``leffa eval --flow`` (``leffa.metrics.flow``) and
``leffa viz-flow`` all call ``capture_attention`` / ``probe_flows`` here, so the same model, inputs, seed and t give
the same flows everywhere (tested).

The convention (one, for all three):

- inputs: ``person`` (the target, whose latent is noised), ``garment`` (the reference), ``mask`` (1 = regenerate;
  default all ones, as pose transfer), ``densepose`` (default black), read by ``leffa.images`` as try-on reads them;
- latents are the VAE posterior **means** (no sampling: a probe measures attention, not VAE noise, and spends no
  randomness on it); the masked image is ``person * (mask < 0.5)``, the sampler's (and upstream's) rule;
- the noise is one ``torch.randn`` of the person latent's shape from a CPU ``torch.Generator`` seeded with
  ``seed``, added by the model's DDPM schedule at ``t`` in float32 on the CPU, then moved to the model's device and
  dtype, so the result does not depend on the device's random number generator; the reference features are taken
  at the same ``t``;
- the captured queries and reference keys become, per layer, a flow on the layer's token grid
  (``leffa.flow.attention_flow``, head-averaged, in float32, the Leffa loss's temperature) and, for chosen target
  pixels, the attention row over the reference (``leffa.flow.attention_map``). ``leffa.viz`` draws the result;
  ``leffa.metrics.flow`` upsamples the flows and measures their end-point error (``leffa.flow.flow_epe``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from leffa import images
from leffa.errors import LeffaError
from leffa.flow import attention_flow, attention_map, token_grid
from leffa.model import LeffaModel

DEFAULT_IMAGE_SIZE = (1024, 768)


@dataclass
class FlowProbe:
    """Per layer: the token-grid flow ``(B, h, w, 2)`` and, per requested point, the attention ``(B, P, h, w)``."""

    flows: dict[str, torch.Tensor]
    attention: dict[str, torch.Tensor]
    points: list[tuple[int, int]]
    timestep: int


# -- user input -------------------------------------------------------------------------------------------------


def check_size(model: LeffaModel, size: tuple[int, int]) -> None:
    images.check_size(size, "--size", multiple=model.latent_downscale)


_COORDINATE = r"(-?\d+(?:\.\d+)?%|-?\d+)"


def _coordinate(text: str, extent: int) -> int:
    """``"40"`` -> 40 (a whole pixel); ``"50%"`` -> that share of the way from the first pixel to the last."""
    if not text.endswith("%"):
        return int(text)
    share = float(text[:-1]) / 100
    return round(share * (extent - 1)) if 0 <= share <= 1 else -1


def parse_points(texts: list[str], size: tuple[int, int]) -> list[tuple[int, int]]:
    """``["40,60", "10,20 50%,25%"]`` -> [(40, 60), (10, 20), (x, y)]: target pixels (x, y) inside a ``size`` image.

    A coordinate is a whole pixel or a percentage of the width (x) / height (y), so a command can name the same
    place at any working size (``50%,50%`` is the centre).
    """
    points = []
    for text in texts:
        for item in re.split(r"[\s;]+", text.strip()):
            if not item:
                continue
            match = re.fullmatch(_COORDINATE + "," + _COORDINATE, item)
            if match is None:
                raise LeffaError(f"--points {item!r}: expected x,y in whole pixels (40,60) or percent (50%,40%)")
            x, y = _coordinate(match.group(1), size[1]), _coordinate(match.group(2), size[0])
            if not (0 <= x < size[1] and 0 <= y < size[0]):
                raise LeffaError(
                    f"--points {item!r}: outside the {size[0]}x{size[1]} image (x in 0..{size[1] - 1}, "
                    f"y in 0..{size[0] - 1}, or 0%..100%)"
                )
            points.append((x, y))
    return points


def short_layer_name(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn1`` -> ``down1.a0.b0`` (``mid.a0.b0``, ``up2.a1.b0``);
    other names are returned unchanged."""
    match = _LAYER_PATTERN.match(name)
    if match is None:
        return name
    part, block, attention, transformer, mid_attention, mid_transformer = match.groups()
    if part is None:
        return f"mid.a{mid_attention}.b{mid_transformer}"
    return f"{part}{block}.a{attention}.b{transformer}"


_LAYER_PATTERN = re.compile(
    r"^(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn1$"
    r"|^mid_block\.attentions\.(\d+)\.transformer_blocks\.(\d+)\.attn1$"
)


def resolve_layers(selection: str | None, layer_names: list[str]) -> list[str]:
    """``"all"`` / None or comma-separated full or short names (``up1.a0.b0``) -> full names in execution order."""
    if selection is None or selection.strip().lower() == "all":
        return list(layer_names)
    by_name = {name: name for name in layer_names} | {short_layer_name(name): name for name in layer_names}
    chosen = []
    for item in (part.strip() for part in selection.split(",")):
        if not item:
            continue
        if item not in by_name:
            known = ", ".join(short_layer_name(name) for name in layer_names)
            raise LeffaError(f"--layers {item!r}: no such self-attention layer; this model has: {known}")
        chosen.append(by_name[item])
    if not chosen:
        raise LeffaError("--layers: give 'all' or at least one layer name")
    return [name for name in layer_names if name in set(chosen)]


def load_image(path: str | Path, size: tuple[int, int], option: str) -> torch.Tensor:
    """An image file -> ``(1, 3, H, W)`` in [-1, 1] at ``size``, read and resized as try-on does (``leffa.images``)."""
    return images.rgb_tensor(images.read_rgb(path, option), size)[None]


def load_mask(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """A mask image -> ``(1, 1, H, W)`` in {0, 1} at ``size`` (white = regenerate), as try-on (``leffa.images``)."""
    return images.mask_tensor(images.open_image(path, "--mask"), size)[None]


def load_densepose(path: str | Path, size: tuple[int, int], kind: str = "rgb") -> torch.Tensor:
    """A DensePose image -> ``(1, 3, H, W)`` in [-1, 1] at ``size``: a rendering (``"rgb"``, try-on) or an IUV
    (``"iuv"``, pose transfer), as try-on and pose read them (``leffa.images.densepose_tensor``)."""
    return images.densepose_tensor(images.open_image(path, "--densepose"), size, kind)[None]


def load_gt_flow(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """A ground-truth flow ``.npy`` (float32 (H, W, 2), grid_sample units, NaN = none) -> ``(1, H, W, 2)`` at ``size``.

    The units do not depend on resolution, so a flow of another size is resampled (nearest, keeping NaN).
    """
    from leffa.synth.dataset import load_gt_flow as read_flow

    try:
        flow = torch.from_numpy(read_flow(path))[None]
    except LeffaError as error:
        raise LeffaError(f"--gt-flow {error}") from None
    if tuple(flow.shape[1:3]) != tuple(size):
        flow = F.interpolate(flow.permute(0, 3, 1, 2), size=size, mode="nearest").permute(0, 2, 3, 1)
    return flow


# -- the probe --------------------------------------------------------------------------------------------------


def token_index(point: tuple[int, int], grid: tuple[int, int], size: tuple[int, int]) -> int:
    """Index of the token of an ``grid`` = (h, w) layer whose cell contains image pixel ``point`` = (x, y)."""
    x, y = point
    row = min(y * grid[0] // size[0], grid[0] - 1)
    column = min(x * grid[1] // size[1], grid[1] - 1)
    return row * grid[1] + column


def layer_flows(
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]],
    size: tuple[int, int],
    points: list[tuple[int, int]] | None = None,
    temperature: float = 2.0,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Captured ``{layer: (queries, reference keys)}`` (B, heads, n, d) -> token-grid flows and point attention.

    Computed in float32 whatever the model dtype, so that the softmax of half-precision activations is exact enough.
    """
    flows, attention = {}, {}
    for name, (queries, keys) in captured.items():
        queries, keys = queries.float(), keys.float()
        height, width = token_grid(keys.shape[2], *size)
        flows[name] = attention_flow(queries, keys, height, width, temperature).cpu()
        if points:
            rows = [token_index(point, (height, width), size) for point in points]
            maps = attention_map(queries[:, :, rows], keys, temperature)
            attention[name] = maps.reshape(queries.shape[0], len(rows), height, width).cpu()
    return flows, attention


@torch.no_grad()
def capture_attention(
    model: LeffaModel,
    person: torch.Tensor,
    garment: torch.Tensor,
    mask: torch.Tensor | None = None,
    densepose: torch.Tensor | None = None,
    timestep: int = 250,
    layers: list[str] | None = None,
    seed: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The probe's forward pass (convention in the module docstring): ``{layer: (queries, reference keys)}``, each
    ``(B, heads, n, d)``, for ``layers`` (default all) in execution order.

    ``person``/``garment`` ``(B, 3, H, W)`` in [-1, 1]; ``mask`` ``(B, 1, H, W)``, 1 = regenerate (default all ones);
    ``densepose`` ``(B, 3, H, W)`` in [-1, 1] (default black).
    """
    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    steps = scheduler.config.num_train_timesteps
    if not 0 <= int(timestep) < steps:
        raise LeffaError(f"--t {timestep}: the timestep must be in 0..{steps - 1}")
    device, dtype = model.device, model.dtype
    size = (person.shape[-2], person.shape[-1])
    batch = person.shape[0]
    if mask is None:
        mask = torch.ones(batch, 1, *size)
    if densepose is None:
        densepose = -torch.ones(batch, 3, *size)
    person, garment = person.to(device), garment.to(device)
    mask, densepose = mask.to(device), densepose.to(device)

    person_latent = model.encode(person, sample=False)
    masked_latent = model.encode(person * (mask < 0.5), sample=False)
    reference_latent = model.encode(garment, sample=False)
    noise = torch.randn(person_latent.shape, generator=torch.Generator().manual_seed(seed))
    timesteps = torch.full((batch,), int(timestep), dtype=torch.long)
    noisy = scheduler.add_noise(person_latent.float().cpu(), noise, timesteps).to(device, dtype)
    timesteps = timesteps.to(device)

    model_input = model.generative_input(noisy, mask, masked_latent, densepose)
    features = model.reference_features(reference_latent, timesteps)
    captured: dict = {}
    model.predict_noise(model_input, timesteps, features, capture=captured, capture_layers=layers)
    return {name: captured[name] for name in (layers or model.layer_names) if name in captured}


def probe_flows(
    model: LeffaModel,
    person: torch.Tensor,
    garment: torch.Tensor,
    mask: torch.Tensor | None = None,
    densepose: torch.Tensor | None = None,
    timestep: int = 250,
    layers: list[str] | None = None,
    points: list[tuple[int, int]] | None = None,
    seed: int = 0,
    temperature: float = 2.0,
) -> FlowProbe:
    """``capture_attention`` then ``layer_flows``: per layer the token-grid flow and the attention of ``points``."""
    captured = capture_attention(model, person, garment, mask, densepose, timestep, layers, seed)
    flows, attention = layer_flows(captured, (person.shape[-2], person.shape[-1]), points, temperature)
    return FlowProbe(flows=flows, attention=attention, points=list(points or []), timestep=int(timestep))
