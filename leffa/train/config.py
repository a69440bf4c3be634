"""Training configuration: the paper's stage presets, a TOML/YAML file, ``LEFFA_TRAIN_*`` variables, CLI options.

Precedence, highest first: explicit values (CLI options, or keyword arguments in Python), environment
(``LEFFA_TRAIN_LR=2e-5``), the config file, the stage preset for ``(task, stage)``, the field defaults. Every field
is flat so each has one obvious name in all four places; the CLI's options are generated from the fields.

Resolution is one pure function, ``resolve_config(file_values, environment, explicit)``; ``load_config`` only
reads the file and ``os.environ`` and calls it. The stage preset is applied while validating a ``TrainConfig``, so
``TrainConfig(task="pose", stage=2)`` in Python gets the same settings as ``leffa train --task pose --stage 2``.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leffa.errors import LeffaError
from leffa.images import parse_size

ENV_PREFIX = "LEFFA_TRAIN_"
BASE_MODELS = {
    "vton": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "pose": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
}

# The paper's recipe (Sec. 4.1) per task and stage: image size (H, W), global batch, optimizer steps, Leffa loss.
# Pose stages 2-3 batch: the paper does not say; 64 as for try-on at the larger size.
STAGE_PRESETS: dict[tuple[str, int], dict[str, Any]] = {
    ("vton", 1): {"size": (512, 384), "batch_size": 256, "max_steps": 10_000, "leffa_loss": False},
    ("vton", 2): {"size": (1024, 768), "batch_size": 64, "max_steps": 36_000, "leffa_loss": False},
    ("vton", 3): {"size": (1024, 768), "batch_size": 64, "max_steps": 10_000, "leffa_loss": True},
    ("pose", 1): {"size": (256, 176), "batch_size": 256, "max_steps": 80_000, "leffa_loss": False},
    ("pose", 2): {"size": (512, 352), "batch_size": 64, "max_steps": 80_000, "leffa_loss": False},
    ("pose", 3): {"size": (512, 352), "batch_size": 64, "max_steps": 24_000, "leffa_loss": True},
}


def stage_preset(task: str, stage: int) -> dict[str, Any]:
    """Preset values for a stage; stages 2 and 3 start from the previous stage's final model by default."""
    preset = dict(STAGE_PRESETS[(task, stage)])
    preset["output"] = f"runs/{task}-stage{stage}"
    if stage > 1:
        preset["init"] = f"runs/{task}-stage{stage - 1}/model.safetensors"
    return preset


class TrainConfig(BaseModel):
    """Everything ``leffa train`` needs; see docs/training.md for each field.

    Values not given are taken from the stage preset of ``(task, stage)``, then from the defaults below.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    # what and where
    task: Literal["vton", "pose"] = Field("vton", description="vton (virtual try-on) or pose (pose transfer).")
    stage: Literal[1, 2, 3] = Field(
        1,
        description="Paper stage: 1 low-res, 2 high-res, 3 high-res fine-tuning with the Leffa loss (from stage 2).",
    )
    data: Path | None = Field(None, description="Dataset folder (VITON-HD, DressCode or DeepFashion layout).")
    dataset: Literal["auto", "vitonhd", "dresscode", "deepfashion"] = Field(
        "auto", description="Dataset layout; auto detects it."
    )
    dresscode_categories: list[str] = Field(
        ["upper_body", "lower_body", "dresses"], description="DressCode categories to train on (comma-separated)."
    )
    unpaired_truth: bool = Field(
        False,
        description="Also train on synthetic data's unpaired ground truth (leffa prep synth --unpaired): each person "
        "wearing another sample's garment, so the mask no longer gives away the garment's shape.",
    )
    output: Path = Field(Path("runs/vton-stage1"), description="Run folder: checkpoints, logs, model.safetensors.")
    base: str | None = Field(
        None, description="Base model folder or hub id (SD1.5-inpainting / SDXL-inpainting); default: the task's."
    )
    init: str = Field(
        "base", description="'base' (base UNet weights), 'random' (base config only), or a checkpoint file."
    )
    grow: bool = Field(
        False,
        description="Load --init's weights into --base's larger architecture (e.g. more attention levels); "
        "the new attention blocks start as the identity.",
    )
    offline: bool = Field(False, description="Use only the local hub cache for the base model.")

    # schedule
    size: tuple[int, int] = Field((512, 384), description="Training image size HxW, e.g. 1024x768.")
    batch_size: int = Field(256, description="Global batch per optimizer step.")
    micro_batch_size: int | None = Field(
        None,
        description="Per-process batch per forward pass; the rest is gradient accumulation (default: batch/processes).",
    )
    max_steps: int = Field(10_000, description="Optimizer steps.")
    seed: int = Field(42, description="Random seed.")

    # optimizer (the authors' early training config)
    lr: float = Field(1e-5, description="AdamW learning rate.")
    adam_beta1: float = Field(0.9, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, description="AdamW beta2.")
    weight_decay: float = Field(1e-2, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, description="Gradient-norm clipping.")
    warmup_steps: int = Field(0, description="Linear learning-rate warm-up steps (0: none).")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="Learning rate after the warm-up: constant, or decayed to 0 at max_steps (linear or cosine).",
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("bf16", description="Mixed precision: no, fp16 or bf16.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward.")
    ema: bool = Field(False, description="Keep an EMA of the weights and save it.")
    ema_decay: float = Field(0.9999, description="EMA decay.")

    # model inputs
    reference_dropout: float = Field(
        0.1, description="Probability of an all-zero reference latent, for classifier-free guidance."
    )

    snr_gamma: float | None = Field(
        None,
        description="Min-SNR-gamma weighting of the diffusion loss (5 in the paper; unset: the plain mean, as Leffa).",
    )

    # Leffa loss
    leffa_loss: bool = Field(False, description="Add the Leffa loss (on in stage 3).")
    leffa_weight: float = Field(1e-3, description="Leffa loss weight (lambda).")
    leffa_temperature: float = Field(2.0, description="Softmax temperature of the Leffa loss's attention (tau).")
    leffa_resolution_threshold: float = Field(
        1 / 32, description="Leffa loss layers: token grid / image height at least this."
    )
    leffa_resolution_gate: Literal[">=", ">"] = Field(">=", description="Compare layers with the threshold by >= or >.")
    leffa_timestep_threshold: int = Field(500, description="Leffa loss only for timesteps below this.")
    leffa_distance: Literal["l2", "smooth_l1"] = Field("l2", description="Leffa loss distance: l2 or smooth_l1.")

    # augmentation
    flip_probability: float = Field(0.5, description="Probability of a horizontal flip.")
    affine_strength: float = Field(0.05, description="Strength of the random affine augmentation.")
    cache_latents: bool = Field(
        False,
        description="Encode each training sample with the frozen VAE once and keep its posterior (in CPU memory), "
        "instead of at every step; needs flip_probability 0 and affine_strength 0.",
    )

    # bookkeeping
    checkpoint_every: int = Field(1000, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(3, description="Checkpoints kept (the oldest are deleted).")
    save_every: int = Field(
        5000, description="Steps between saved model weights besides the final one (0: final only)."
    )
    save_dtype: Literal["fp32", "fp16", "bf16"] = Field("fp16", description="Dtype of the saved model weights.")
    validate_every: int = Field(1000, description="Steps between previews (0: never).")
    validation_steps: int = Field(20, description="Sampling steps of the validation previews.")
    log_every: int = Field(10, description="Steps between log lines.")
    num_workers: int = Field(2, description="Data-loading worker processes.")
    resume: str | None = Field(None, description="'latest' or a checkpoint folder.")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, values: Any) -> Any:
        return with_stage_preset(values) if isinstance(values, Mapping) else values

    @field_validator("stage", mode="before")
    @classmethod
    def _stage(cls, value):
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("dresscode_categories", mode="before")
    @classmethod
    def _categories(cls, value):
        if isinstance(value, str):  # environment or CLI: "upper_body,dresses" or a JSON list
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value):
        try:
            return parse_size(value, "size", multiple=8)  # multiples of 8: the VAE's downscale
        except LeffaError as error:
            raise ValueError(str(error)) from None

    @field_validator(
        "lr",
        "batch_size",
        "micro_batch_size",
        "max_steps",
        "checkpoint_every",
        "log_every",
        "keep_checkpoints",
        "validation_steps",
        "leffa_temperature",
        "snr_gamma",
    )
    @classmethod
    def _positive(cls, value, info):
        if value is not None and value <= 0:  # None: an optional setting left unset
            raise ValueError(f"{info.field_name} must be positive")
        return value

    @field_validator("*")
    @classmethod
    def _finite(cls, value, info):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be a finite number, not {value}")
        return value

    @field_validator("cache_latents")
    @classmethod
    def _cache_without_augmentation(cls, value, info):
        """Named after the setting asked for (the augmentation fields come before it, so they are in ``info.data``)."""
        if value and (info.data.get("flip_probability", 0) > 0 or info.data.get("affine_strength", 0) > 0):
            raise ValueError("needs flip_probability 0 and affine_strength 0 (augmented images change every epoch)")
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value):
        if not 0 <= value < 2**32:  # numpy's and accelerate's set_seed take 32-bit seeds
            raise ValueError(f"seed {value} is out of range (0 to 2^32 - 1)")
        return value

    @model_validator(mode="after")
    def _ranges(self):
        if not 0 <= self.reference_dropout < 1:
            raise ValueError("reference_dropout must be in [0, 1)")
        for name in ("flip_probability", "ema_decay", "adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in (
            "weight_decay",
            "grad_clip",
            "affine_strength",
            "leffa_weight",
            "warmup_steps",
            "save_every",
            "validate_every",
            "num_workers",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.grow and self.init in ("base", "random"):
            raise ValueError("grow needs init CHECKPOINT (the model to grow into the base's architecture)")
        if not 0 <= self.leffa_timestep_threshold <= 1000:
            raise ValueError("leffa_timestep_threshold must be in [0, 1000] (diffusion timesteps)")
        return self

    # -- derived ------------------------------------------------------------------------------------------------

    @property
    def base_model(self) -> str:
        return self.base or BASE_MODELS[self.task]

    def accumulation(self, processes: int) -> tuple[int, int]:
        """(micro-batch per process, gradient-accumulation steps) that make up ``batch_size`` on ``processes``."""
        micro = self.micro_batch_size or max(1, self.batch_size // processes)
        per_pass = micro * processes
        if self.batch_size % per_pass:
            raise LeffaError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size {micro} x {processes} processes"
            )
        return micro, self.batch_size // per_pass

    def resolved(self) -> dict:
        """The config as plain JSON-able values (for --dry-run, the run folder and TensorBoard)."""
        return json.loads(self.model_dump_json())


def read_config_file(path: str | Path) -> dict:
    """A TOML or YAML file as a flat dict (a top-level ``[train]`` table/key is accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: config file not found")
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(path.read_text())
        elif path.suffix in (".yaml", ".yml"):
            values = yaml.safe_load(path.read_text()) or {}
        else:
            raise LeffaError(f"{path}: config file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise LeffaError(f"{path}: not valid {path.suffix[1:].upper()} ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise LeffaError(f"{path}: expected a table of settings")
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = values["train"]
    return {key.replace("-", "_"): value for key, value in values.items()}


def with_stage_preset(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` filled in with the stage preset of their ``(task, stage)`` (defaults vton, 1) where not given.

    An unknown task or stage adds nothing: field validation then names the bad value.
    """
    task = values.get("task", TrainConfig.model_fields["task"].default)
    stage = values.get("stage", TrainConfig.model_fields["stage"].default)
    try:
        preset = stage_preset(str(task), int(stage))
    except (KeyError, TypeError, ValueError):
        return dict(values)
    return {**preset, **values}


def environment_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``LEFFA_TRAIN_<NAME>`` variables of ``environ`` as ``{name: text}`` (names case-insensitive).

    A variable with the prefix but no such setting is an error naming it: a typo should not silently do nothing.
    """
    values = {}
    for key, value in environ.items():
        if not key.upper().startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in TrainConfig.model_fields:
            raise LeffaError(f"{key}: no training setting {name!r} (see `leffa train --help`)")
        values[name] = value
    return values


def resolve_config(
    file_values: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    explicit: Mapping[str, Any] | None = None,
    source: str | Path = "config file",
) -> TrainConfig:
    """The training config from its layers, lowest first: stage preset, file, environment, explicit values.

    A pure function of its arguments: ``file_values`` is a parsed config file (``read_config_file``),
    ``environment`` the settings from ``LEFFA_TRAIN_*`` (``environment_settings``), ``explicit`` the CLI options or
    keyword arguments, where ``None`` means "not given". The stage preset comes in while ``TrainConfig`` validates.
    Errors are ``LeffaError`` with ``option`` set to the setting concerned.
    """
    file_values = dict(file_values or {})
    unknown = sorted(set(file_values) - set(TrainConfig.model_fields))
    if unknown:
        raise LeffaError(f"{source}: unknown settings {', '.join(unknown)}")
    merged: dict[str, Any] = {}
    for layer in (file_values, environment or {}, explicit or {}):
        merged.update((key, value) for key, value in layer.items() if value is not None)
    try:
        return TrainConfig(**merged)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if not (where and message.startswith(f"{where} ")):  # a validator's message may name the setting already
            message = f"{where or 'config'}: {message}"
        raise LeffaError(f"training setting {message}", option=where or None) from None


def load_config(
    config_file: str | Path | None = None, environ: Mapping[str, str] | None = None, **explicit
) -> TrainConfig:
    """Read ``config_file`` and the environment (``os.environ`` unless ``environ`` is given), then ``resolve_config``.

    ``explicit`` values of ``None`` are ignored (options the user did not give).
    """
    file_values = read_config_file(config_file) if config_file else {}
    environment = environment_settings(os.environ if environ is None else environ)
    return resolve_config(file_values, environment, explicit, source=config_file or "config file")
