"""Training configuration: the paper's stage presets, a TOML/YAML file, ``LEFFA_TRAIN_*`` variables, CLI options.

Precedence, highest first: explicit overrides (CLI options), environment (``LEFFA_TRAIN_LR=2e-5``), the config file,
the stage preset for ``(task, stage)``, the field defaults. Every field is flat so each has one obvious name in all
four places.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from leffa.errors import LeffaError

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


def parse_size(value) -> tuple[int, int]:
    """``"1024x768"``, ``[1024, 768]`` or ``(1024, 768)`` -> (H, W)."""
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").split("x")
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"size {value!r} is not HxW (e.g. 1024x768)") from None
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"size {value!r} is not HxW (e.g. 1024x768)")
    if value[0] % 8 or value[1] % 8:
        raise ValueError(f"size {value[0]}x{value[1]}: both sides must be multiples of 8 (the VAE's downscale)")
    return value


class _DictSource(PydanticBaseSettingsSource):
    """A fixed dict as a settings source (the config file's content, or the stage preset)."""

    def __init__(self, settings_cls, values: dict):
        super().__init__(settings_cls)
        self.values = values

    def get_field_value(self, field: FieldInfo, field_name: str):
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class TrainConfig(BaseSettings):
    """Everything ``leffa train`` needs; see docs/training.md for each field."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # what and where
    task: Literal["vton", "pose"] = "vton"
    stage: Literal[1, 2, 3] = 1
    data: Path | None = None
    dataset: Literal["auto", "vitonhd", "dresscode", "deepfashion"] = "auto"
    dresscode_categories: list[str] = ["upper_body", "lower_body", "dresses"]
    output: Path = Path("runs/vton-stage1")
    base: str | None = None  # folder or hub id; None = the task's base model
    init: str = "base"  # "base" (base UNet weights), "random" (base config only), or a checkpoint path
    offline: bool = False

    # schedule
    size: tuple[int, int] = (512, 384)
    batch_size: int = 256  # global, per optimizer step
    micro_batch_size: int | None = None  # per process and forward pass; None = batch_size / processes
    max_steps: int = 10_000
    seed: int = 42

    # optimizer (the authors' early training config)
    lr: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    warmup_steps: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    gradient_checkpointing: bool = True
    ema: bool = False
    ema_decay: float = 0.9999

    # model inputs
    reference_dropout: float = 0.1

    # Leffa loss
    leffa_loss: bool = False
    leffa_weight: float = 1e-3
    leffa_temperature: float = 2.0
    leffa_resolution_threshold: float = 1 / 32
    leffa_resolution_gate: Literal[">=", ">"] = ">="
    leffa_timestep_threshold: int = 500
    leffa_distance: Literal["l2", "smooth_l1"] = "l2"

    # augmentation
    flip_probability: float = 0.5
    affine_strength: float = 0.05

    # bookkeeping
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    save_every: int = 5000  # model weights (safetensors) besides the final one; 0 = final only
    save_dtype: Literal["fp32", "fp16", "bf16"] = "fp16"
    validate_every: int = 1000  # 0 = never
    validation_steps: int = 20  # sampling steps of the validation previews
    log_every: int = 10
    num_workers: int = 2
    resume: str | None = None  # "latest" or a checkpoint folder

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value):
        return parse_size(value)

    @field_validator("lr", "batch_size", "max_steps", "checkpoint_every", "log_every")
    @classmethod
    def _positive(cls, value, info):
        if value <= 0:
            raise ValueError(f"{info.field_name} must be positive")
        return value

    @field_validator("*")
    @classmethod
    def _finite(cls, value, info):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be a finite number, not {value}")
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
        if self.micro_batch_size is not None and self.micro_batch_size <= 0:
            raise ValueError("micro_batch_size must be positive")
        for name in ("flip_probability", "ema_decay", "adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in ("weight_decay", "grad_clip", "affine_strength", "leffa_weight", "warmup_steps", "save_every",
                     "validate_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("keep_checkpoints", "validation_steps", "leffa_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.leffa_timestep_threshold <= 1000:
            raise ValueError("leffa_timestep_threshold must be in [0, 1000] (diffusion timesteps)")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _DictSource(settings_cls, _LAYERS["file"]), _DictSource(settings_cls, _LAYERS["preset"]))

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


_LAYERS: dict[str, dict] = {"file": {}, "preset": {}}


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


def load_config(config_file: str | Path | None = None, **overrides) -> TrainConfig:
    """Resolve the training config from the stage preset, a file, the environment and ``overrides``.

    ``overrides`` with value ``None`` are ignored (options the user did not give).
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    file_values = read_config_file(config_file) if config_file else {}
    known = set(TrainConfig.model_fields)
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise LeffaError(f"{config_file}: unknown settings {', '.join(unknown)}")

    def pick(name, default):
        env = os.environ.get(ENV_PREFIX + name.upper())
        return overrides.get(name, env if env is not None else file_values.get(name, default))

    task, stage = pick("task", "vton"), pick("stage", 1)
    try:
        stage = int(stage)
        preset = stage_preset(task, stage)
    except (KeyError, ValueError):
        raise LeffaError(f"no stage preset for task {task!r} stage {stage!r}; tasks vton/pose, stages 1-3") from None
    _LAYERS["file"], _LAYERS["preset"] = file_values, preset
    try:
        return TrainConfig(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise LeffaError(f"training setting {where}: {first['msg']}") from None
    finally:
        _LAYERS["file"], _LAYERS["preset"] = {}, {}
