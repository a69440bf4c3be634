"""Training: the dual-UNet diffusion loss plus (stage 3) the Leffa loss, under ``accelerate``.

One optimizer step = ``batch_size`` samples = micro-batches x processes x gradient-accumulation steps. Per micro-batch:
encode target, masked target and reference with the frozen VAE; drop the reference (all-zero latent) with
probability ``reference_dropout`` so classifier-free guidance works; noise the target latent at a uniform timestep;
the reference UNet sees the clean reference latent at that same timestep; the generative UNet predicts the noise.
The Leffa loss reads the queries and reference keys the generative UNet's attention layers captured.

Checkpoints (``OUTPUT/checkpoints/step-N``) hold model, optimizer, LR scheduler, every process's RNG, the noise
generator, EMA and the data position; ``resume="latest"`` continues bit-for-bit where it stopped. Run-folder
ownership, checkpoint manifests, verification, resume fallback and pruning live in ``leffa.train.checkpoints``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file
from torch import nn

from leffa.atomic import atomic_path, save_image
from leffa.base_folder import BASE_FILES, WEIGHT_FILES, read_part_weights
from leffa.checkpoint import read_config, save_model
from leffa.data import Augmentation, ResumableSampler, collate, open_dataset
from leffa.errors import LeffaError
from leffa.hub import MissingWeights, fetch
from leffa.loss import (
    LeffaLossSettings,
    diffusion_loss,
    diffusion_target,
    leffa_loss,
    min_snr_weight,
    select_layers,
)
from leffa.model import LeffaConfig, LeffaModel
from leffa.probe import capture_attention
from leffa.shard import process_state  # its home; the train command imports it from here too
from leffa.train import checkpoints
from leffa.train.config import TrainConfig
from leffa.train.latent_cache import LatentCache, encode_step_images
from leffa.weights import resolve_model

ValidationHook = Callable[[int, LeffaModel, dict, dict], None]
"""Called on the main process at each validation: ``(step, model, batch, captured {layer: (queries, keys)})``, the
capture of ``leffa.probe`` (see ``Trainer.validation_attention``)."""


# -- base model and initialisation ---------------------------------------------------------------------------------


def resolve_base(base: str, offline: bool = False, weights: bool = False) -> Path:
    """A local base-model folder, or a hub repository fetched into the cache (configs, and weights if asked)."""
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or base.startswith((".", "~")) or base.count("/") != 1:
        raise LeffaError(f"{base}: base-model folder not found (nor a hub id like owner/name)")
    files = BASE_FILES + (("unet/" + WEIGHT_FILES[0], "vae/" + WEIGHT_FILES[0]) if weights else ())
    try:
        fetched = [fetch(name, repo_id=base, offline=offline) for name in files]
    except MissingWeights as error:
        raise error.or_else("pass --base FOLDER (a local diffusers base-model folder)") from None
    return fetched[0].parents[1]


def read_base_weights(folder: Path, part: str) -> dict[str, torch.Tensor]:
    """``folder/part/diffusion_pytorch_model[.fp16].safetensors`` as a state dict (errors point at ``--init``)."""
    hint = "give a base folder with weights, a checkpoint (init FILE) or init random"
    return read_part_weights(folder, part, hint, option="init")


def adapt_conv_in(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """The base ``conv_in`` weight with ``channels`` inputs: extra channels start at zero, surplus ones are cut."""
    out_channels, base_channels, *kernel = weight.shape
    adapted = weight.new_zeros(out_channels, channels, *kernel)
    keep = min(channels, base_channels)
    adapted[:, :keep] = weight[:, :keep]
    return adapted


def load_unet_from_base(unet: nn.Module, base_state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy base UNet weights into one of our UNets (cross-attention and SDXL's added embedding are not used)."""
    state = {}
    for key, value in unet.state_dict().items():
        if key not in base_state:
            raise LeffaError(f"{source}: base UNet weights lack {key}; is this the right base model?")
        weight = base_state[key]
        if key == "conv_in.weight":
            weight = adapt_conv_in(weight, value.shape[1])
        if weight.shape != value.shape:
            raise LeffaError(
                f"{source}: base weight {key} is {tuple(weight.shape)}, the model needs {tuple(value.shape)}"
            )
        state[key] = weight
    unet.load_state_dict(state, strict=True)


def initialise_model(config: TrainConfig) -> LeffaModel:
    """The model a run starts from: base weights (conv_in widened/cut), a checkpoint, or random (tiny tests)."""
    init = config.init
    if init not in ("base", "random"):
        # Any --model spec (name, file, folder, hub id) through the one resolver; a foreign state dict uses the
        # run's base model for its architecture.
        checkpoint = Path(init).expanduser()
        if checkpoint.suffix in (".safetensors", ".pth", ".bin", ".ckpt") and not checkpoint.is_file():
            hint = f" (stage {config.stage} starts from stage {config.stage - 1}'s model)" if config.stage > 1 else ""
            raise LeffaError(
                f"{checkpoint}: init checkpoint not found{hint}; give init FILE, base or random", option="init"
            )
        base = None
        if checkpoint.is_file() and read_config(checkpoint) is None:
            base = resolve_base(config.base_model, config.offline)
        model = resolve_model(init, task=config.task, offline=config.offline, base=base, option="--init").model
        if config.grow:
            folder = resolve_base(config.base_model, config.offline)
            grown = LeffaModel(LeffaConfig.from_base_folder(folder, task=config.task))
            grown.config.extra = dict(model.config.extra)
            grow_from(grown, model, source_name=init)
            model = grown
    else:
        folder = resolve_base(config.base_model, config.offline, weights=init == "base")
        model = LeffaModel(LeffaConfig.from_base_folder(folder, task=config.task))
        if init == "base":
            unet_state = read_base_weights(folder, "unet")
            for unet in (model.generative_unet, model.reference_unet):
                load_unet_from_base(unet, unet_state, folder / "unet")
            model.vae.load_state_dict(read_base_weights(folder, "vae"), strict=True)
    model.config.task = config.task
    model.config.extra["image_size"] = list(config.size)
    return model


def grow_from(model: LeffaModel, source: LeffaModel, source_name: str = "init") -> list[str]:
    """Load ``source``'s weights into ``model``, a larger architecture of the same parts (e.g. self-attention at more
    UNet levels), so that ``model`` computes exactly what ``source`` did; returns the names of the new parameters.

    Every source weight must exist in ``model`` with its shape. The new attention blocks keep their random weights
    but start with a zero output projection: a diffusers ``Transformer2DModel`` adds its output to its input, so each
    is the identity until training opens it (as ControlNet's zero convolutions), and the Leffa loss trains its
    queries and keys from the first step, as it reads the attention map, not the block's output.
    """
    target, weights = model.state_dict(), source.state_dict()
    for key, value in weights.items():
        if key not in target or target[key].shape != value.shape:
            found = "missing" if key not in target else f"{tuple(target[key].shape)}"
            raise LeffaError(
                f"{source_name}: cannot grow into the base architecture: {key} {tuple(value.shape)} is {found} there"
            )
    new = [key for key in target if key not in weights]
    model.load_state_dict(weights, strict=False)
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "proj_out") and any(key.startswith(f"{name}.") for key in new):
                module.proj_out.weight.zero_()
                if module.proj_out.bias is not None:
                    module.proj_out.bias.zero_()
    return new


def freeze_unreachable_reference_parameters(model: LeffaModel) -> list[str]:
    """Freeze reference-UNet weights that cannot affect the features it hands over (its last layers, conv_out).

    Only the reference UNet's attention inputs are used, so the weights after its last recorded layer never get a
    gradient; DDP would wait for them forever. Found structurally, by one tiny backward pass.
    """
    unet = model.reference_unet
    side = 2 ** (len(unet.down_blocks) - 1)
    latents = torch.zeros(1, unet.config.in_channels, side, side, device=model.device, dtype=model.dtype)
    with torch.enable_grad():
        features = model.reference_features(latents, 0)
        torch.stack([feature.float().sum() for feature in features.values()]).sum().backward()
    frozen = []
    for name, parameter in unet.named_parameters():
        if parameter.grad is None and parameter.requires_grad:
            parameter.requires_grad_(False)
            frozen.append(name)
        parameter.grad = None
    return frozen


class TrainingForward(nn.Module):
    """The trainable part of a step as one ``forward`` (so DDP/FSDP hook it): reference UNet, then generative UNet."""

    def __init__(self, model: LeffaModel, capture_layers: list[str] | None):
        super().__init__()
        self.model = model
        self.capture_layers = capture_layers

    def forward(self, model_input, reference_latents, timesteps):
        features = self.model.reference_features(reference_latents, timesteps)
        captured = {} if self.capture_layers else None
        prediction = self.model.predict_noise(model_input, timesteps, features, captured, self.capture_layers)
        return prediction, captured or {}


def release_features(model: LeffaModel) -> None:
    """Drop what reference layers recomputed by gradient checkpointing recorded during backward."""
    model.reference_context.recorded = {}


class ExponentialMovingAverage:
    """EMA of the trainable weights in float32, with diffusers' warm-up ``min(decay, (1 + n) / (10 + n))``."""

    def __init__(self, named_parameters, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in named_parameters}

    @torch.no_grad()
    def update(self, named_parameters) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, parameter in named_parameters:
            self.shadow[name].lerp_(parameter.detach().float(), 1 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.shadow, "__updates__": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.updates = int(state.pop("__updates__"))
        for name, value in state.items():
            self.shadow[name].copy_(value)


def adamw(parameters, lr: float, betas: tuple[float, float], weight_decay: float, device: torch.device):
    """AdamW, fused into one kernel where torch has one (CPU and CUDA): on the synth-tiny model's 5M parameters and
    one CPU thread its step takes a quarter of the time of the default multi-tensor loop, about 7% of a training step
    (benchmarks/train_step.py). Same update, same state dict."""
    return torch.optim.AdamW(
        parameters, lr=lr, betas=betas, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda") or None
    )


# -- one step ------------------------------------------------------------------------------------------------------


@dataclass
class StepInputs:
    model_input: torch.Tensor
    reference_latents: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    kept_reference: torch.Tensor
    loss_weight: torch.Tensor | None = None  # (B,) Min-SNR weights of the diffusion loss; None: the plain mean


@torch.no_grad()
def prepare_inputs(
    model: LeffaModel,
    scheduler,
    batch: dict,
    generator: torch.Generator,
    dropout: float,
    cache: LatentCache | None = None,
    snr_gamma: float | None = None,
) -> StepInputs:
    """VAE latents, reference dropout, noise and timesteps for one micro-batch (all randomness from ``generator``).

    With ``cache`` the VAE's posteriors come from it (encoded once per sample); the latents drawn from them use the
    generator exactly as encoding here would."""
    device = model.device
    image, mask = batch["image"].to(device), batch["mask"].to(device)
    if cache is not None:
        moments = cache.moments(model, batch)
    else:
        moments = encode_step_images(model, image, mask, batch["reference"].to(device))
    latents, masked_latents, reference_latents = (model.latents_from_moments(m, generator) for m in moments)
    size = image.shape[0]
    kept = (torch.rand(size, generator=generator, device=device) >= dropout).to(reference_latents.dtype)
    reference_latents = reference_latents * kept[:, None, None, None]
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=generator, device=device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    model_input = model.generative_input(noisy, mask, masked_latents, batch["densepose"].to(device))
    target = diffusion_target(scheduler, latents, noise, timesteps)
    weight = None if snr_gamma is None else min_snr_weight(scheduler, timesteps, snr_gamma)
    return StepInputs(model_input, reference_latents, timesteps, target, kept, weight)


def compute_losses(
    forward: nn.Module, inputs: StepInputs, batch: dict, settings: LeffaLossSettings | None, fused: bool = True
):
    """(total, diffusion, unweighted Leffa, captured) for one micro-batch; the Leffa loss only when ``settings``.

    ``fused=False`` computes the flow through the explicit n x n attention map (benchmarks only)."""
    prediction, captured = forward(inputs.model_input, inputs.reference_latents, inputs.timesteps)
    diffusion = diffusion_loss(prediction, inputs.target, inputs.loss_weight)
    if settings is None:
        return diffusion, diffusion.detach(), torch.zeros((), device=diffusion.device), captured
    device = prediction.device
    result = leffa_loss(
        captured,
        batch["reference"].to(device),
        batch["image"].to(device),
        batch["mask"].to(device),
        inputs.timesteps,
        settings,
        sample_weight=inputs.kept_reference,  # a dropped reference has nothing to be warped from
        fused=fused,
    )
    return diffusion + result.loss, diffusion.detach(), result.unweighted, captured


def loss_settings(config: TrainConfig) -> LeffaLossSettings:
    return LeffaLossSettings(
        weight=config.leffa_weight,
        temperature=config.leffa_temperature,
        resolution_threshold=config.leffa_resolution_threshold,
        resolution_inclusive=config.leffa_resolution_gate == ">=",
        timestep_threshold=config.leffa_timestep_threshold,
        distance=config.leffa_distance,
    )


# -- validation previews -------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_preview(model: LeffaModel, batch: dict, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Ancestral DDPM sampling (the base scheduler, no guidance) of a batch: images in [-1, 1]."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    scheduler.set_timesteps(steps, device=model.device)
    image, mask = batch["image"].to(model.device), batch["mask"].to(model.device)
    masked_latents = model.encode(image * (1 - mask), sample=False)
    reference_latents = model.encode(batch["reference"].to(model.device), sample=False)
    latents = torch.randn(masked_latents.shape, generator=generator, device=model.device, dtype=masked_latents.dtype)
    latents = latents * scheduler.init_noise_sigma
    densepose = batch["densepose"].to(model.device)
    for t in scheduler.timesteps:
        features = model.reference_features(reference_latents, t)
        model_input = model.generative_input(scheduler.scale_model_input(latents, t), mask, masked_latents, densepose)
        noise = model.predict_noise(model_input, t, features)
        latents = scheduler.step(noise.float(), t, latents.float(), generator=generator).prev_sample.to(latents.dtype)
    return model.decode(latents).float().clamp(-1, 1)


def preview_grid(batch: dict, generated: torch.Tensor) -> np.ndarray:
    """Rows of [reference | target | masked target | generated] as an (H', W', 3) uint8 array."""
    image = batch["image"].float().cpu()
    columns = [batch["reference"].float().cpu(), image, image * (1 - batch["mask"].float().cpu()), generated.cpu()]
    rows = torch.cat([torch.cat(list(column), dim=1) for column in columns], dim=2)  # (3, B*H, 4*W)
    return ((rows.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)


class _WeightsView:
    """What ``save_model`` needs (``config`` and ``state_dict()``) for weights gathered outside the model object."""

    def __init__(self, config: LeffaConfig, state: dict[str, torch.Tensor]):
        self.config, self._state = config, state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


# -- the loop ------------------------------------------------------------------------------------------------------


@dataclass
class StepReport:
    """What the CLI shows after each optimizer step (only the main process gets reports)."""

    step: int
    max_steps: int
    loss: float
    diffusion: float
    leffa: float
    steps_per_second: float
    lr: float


@dataclass
class TrainResult:
    output: Path
    model_path: Path | None
    steps: int
    history: list[dict] = field(default_factory=list)
    resumed_from: Path | None = None
    notes: list[str] = field(default_factory=list)
    processes: int = 1
    micro_batch_size: int = 1
    accumulation: int = 1
    frozen_parameters: int = 0


class Trainer:
    """Owns the accelerator, model, optimizer, data and run folder of one training run."""

    def __init__(
        self,
        config: TrainConfig,
        on_step: Callable[[StepReport], None] | None = None,
        validation_hook: ValidationHook | None = None,
        overwrite: bool = False,
    ):
        """Claim the run folder (``overwrite``: delete the run it holds), then build everything; see ``run``."""
        if config.data is None:
            raise LeffaError("data: no dataset folder given", option="data")
        self.config = config
        self.on_step = on_step
        self.validation_hook = validation_hook
        self.output = Path(config.output)
        self.micro_batch, self.accumulation = config.accumulation(process_state().num_processes)
        # Before any heavy work and before the run folder exists: the data's pairs files and layout (no images read).
        self.dataset = open_dataset(
            config.data,
            config.dataset,
            "train",
            config.size,
            "paired",
            Augmentation(flip=config.flip_probability, affine=config.affine_strength),
            config.seed,
            config.dresscode_categories,
            config.unpaired_truth,
        )
        # Then a used, locked or unwritable folder fails at once. The lock lives as long as the run.
        self.lock = (
            checkpoints.claim_run_folder(self.output, config.resume, overwrite)
            if process_state().is_main_process
            else None
        )
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (also done by the kernel if the process dies)."""
        if self.lock is not None:
            self.lock.release()

    def _build(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed
        from diffusers import DDPMScheduler

        config = self.config
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=self.accumulation,
            step_scheduler_with_optimizer=False,
            log_with="tensorboard",
            project_dir=str(self.output),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        accelerator = self.accelerator
        set_seed(config.seed, device_specific=True)

        point = self._resume_point()
        self.resume_from, self.notes, self.run_id = point.folder, point.notes, point.run_id or checkpoints.new_run_id()
        if self.resume_from is not None:
            model = LeffaModel(checkpoints.checkpoint_config(self.resume_from))
        else:
            model = initialise_model(config)
        self.frozen = freeze_unreachable_reference_parameters(model)
        model.vae.requires_grad_(False)
        vae_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision, torch.float32)
        if vae_dtype != torch.float32 and not (
            vae_dtype == torch.float16 and model.vae.config.get("force_upcast", False)
        ):
            model.vae.to(vae_dtype)
        if config.gradient_checkpointing:
            model.generative_unet.enable_gradient_checkpointing()
            model.reference_unet.enable_gradient_checkpointing()
        self.model = model
        self.scheduler = DDPMScheduler.from_config(model.config.scheduler)

        self.settings = loss_settings(config) if config.leffa_loss else None
        layers = None
        if self.settings is not None:
            layers = select_layers(
                model.layer_downscale(), self.settings.resolution_threshold, self.settings.resolution_inclusive
            )
            if not layers:
                raise LeffaError(f"leffa_resolution_threshold {config.leffa_resolution_threshold} selects no layers")
        self.capture_layers = layers

        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = adamw(
            trainable, config.lr, (config.adam_beta1, config.adam_beta2), config.weight_decay, accelerator.device
        )
        lr_scheduler = get_scheduler(  # diffusers' schedules, as its training scripts' --lr_scheduler
            "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps,
        )
        forward = TrainingForward(model, layers)
        self.forward, self.optimizer, self.lr_scheduler = accelerator.prepare(forward, optimizer, lr_scheduler)
        self.trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.ema = ExponentialMovingAverage(self._trainable(), config.ema_decay) if config.ema else None

        self.sampler = ResumableSampler(
            len(self.dataset), self.micro_batch, accelerator.process_index, accelerator.num_processes, config.seed
        )
        self.generator = torch.Generator(device=accelerator.device).manual_seed(
            config.seed * 1000 + accelerator.process_index
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        self.validation_batch = self._validation_batch() if config.validate_every else None
        self.latent_cache = LatentCache() if config.cache_latents else None

    # -- helpers --------------------------------------------------------------------------------------------------

    def _resume_point(self) -> checkpoints.ResumePoint:
        """The checkpoint to resume, chosen (and verified) by the main process and shared with the others."""
        from accelerate.utils import broadcast_object_list

        if not self.config.resume:
            return checkpoints.ResumePoint(None)
        found: list[checkpoints.ResumePoint | None] = [None]
        if self.accelerator.is_main_process:
            found = [checkpoints.find_resume_point(self.output, self.config.resume)]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(found)
        assert found[0] is not None  # the main process's, broadcast to the others
        return found[0]

    def _trainable(self):
        parameters = dict(self.model.named_parameters())
        return [(name, parameters[name]) for name in self.trainable_names]

    def _batches(self):
        """Micro-batches forever, from the saved data position on."""
        loader_args = dict(
            batch_size=self.micro_batch,
            sampler=self.sampler,
            collate_fn=collate,
            drop_last=True,
            num_workers=self.config.num_workers,
            pin_memory=self.accelerator.device.type == "cuda",
        )
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            self.dataset.set_epoch(self.epoch)
            for batch in torch.utils.data.DataLoader(self.dataset, **loader_args):
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _validation_batch(self) -> dict:
        config = self.config
        try:
            dataset = open_dataset(
                config.data,
                config.dataset,
                "test",
                config.size,
                "paired",
                None,
                config.seed,
                config.dresscode_categories,
            )
        except LeffaError:
            dataset = open_dataset(
                config.data,
                config.dataset,
                "train",
                config.size,
                "paired",
                None,
                config.seed,
                config.dresscode_categories,
            )
        return collate([dataset[i] for i in range(min(4, len(dataset)))])

    def _save_weights(self, path: Path) -> Path | None:
        """Gather the full weights (every process must call), EMA if on; the main process writes the file."""
        state = self.accelerator.get_state_dict(self.forward)
        if not self.accelerator.is_main_process:
            return None
        state = {key.removeprefix("model."): value for key, value in state.items()}
        if self.ema is not None:
            state.update({name: value for name, value in self.ema.shadow.items()})
        config = self.model.clone_config()
        config.extra.update({"image_size": list(self.config.size), "stage": self.config.stage, "step": self.step})
        return save_model(_WeightsView(config, state), path, dtype=self.config.save_dtype)

    def _save_checkpoint(self) -> None:
        """Every process writes its part into a hidden folder; the main process seals and publishes it."""
        import shutil

        accelerator = self.accelerator
        partial = checkpoints.partial_folder(self.output, self.step)
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        save_file(
            {"state": self.generator.get_state()},
            str(partial / f"noise_generator_{accelerator.process_index}.safetensors"),
        )
        if accelerator.is_main_process:
            if self.ema is not None:
                save_file(self.ema.state_dict(), str(partial / "ema.safetensors"))
            (partial / "leffa_config.json").write_text(self.model.config.to_json())
            position = {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "processes": accelerator.num_processes,
                "micro_batch_size": self.micro_batch,
            }
            (partial / "trainer_state.json").write_text(json.dumps(position))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            checkpoints.publish(
                partial, self.step, self.run_id, accelerator.num_processes, self.config.keep_checkpoints
            )
        accelerator.wait_for_everyone()

    def _load_checkpoint(self, folder: Path) -> None:
        accelerator = self.accelerator
        position = json.loads((folder / "trainer_state.json").read_text())
        if (position["processes"], position["micro_batch_size"]) != (accelerator.num_processes, self.micro_batch):
            raise LeffaError(
                f"{folder}: saved with {position['processes']} processes x micro-batch {position['micro_batch_size']}; "
                f"resume with the same layout (now {accelerator.num_processes} x {self.micro_batch})"
            )
        accelerator.load_state(str(folder))
        generator_file = folder / f"noise_generator_{accelerator.process_index}.safetensors"
        self.generator.set_state(load_file(str(generator_file))["state"])
        if self.ema is not None:
            if not (folder / "ema.safetensors").is_file():
                raise LeffaError(
                    f"{folder}: holds no EMA weights; resume without ema or from a run that had it", option="ema"
                )
            self.ema.load_state_dict(load_file(str(folder / "ema.safetensors"), device=str(accelerator.device)))
        self.step, self.epoch, self.batch_in_epoch = position["step"], position["epoch"], position["batch_in_epoch"]

    def _validate(self) -> None:
        accelerator = self.accelerator
        if accelerator.is_main_process:
            assert self.validation_batch is not None  # made in __init__ whenever validate_every is set
            model = self.model
            model.eval()
            generator = torch.Generator(device=accelerator.device).manual_seed(self.config.seed)
            with accelerator.autocast():
                generated = sample_preview(model, self.validation_batch, self.config.validation_steps, generator)
            grid = preview_grid(self.validation_batch, generated)
            from PIL import Image

            save_image(Image.fromarray(grid), self.output / "validation" / f"step-{self.step:08d}.png")
            tracker = accelerator.get_tracker("tensorboard", unwrap=True)
            tracker.add_image("validation", grid, self.step, dataformats="HWC")
            if self.validation_hook is not None:
                self.validation_hook(self.step, model, self.validation_batch, self.validation_attention())
            model.generative_unet.train()
            model.reference_unet.train()
        accelerator.wait_for_everyone()

    def validation_attention(self) -> dict:
        """The validation batch's attention through ``leffa.probe`` (the probe of ``eval --flow`` and ``viz-flow``):
        the Leffa loss's layers (all when the loss is off) at half the loss's timestep threshold, seeded with the
        run's seed, in the model's own precision (no autocast, so the flows match the other two entry points)."""
        batch = self.validation_batch
        if batch is None:
            raise LeffaError("no validation batch: validation is off (validate_every is 0)", option="validate_every")
        return capture_attention(
            self.model,
            batch["image"],
            batch["reference"],
            batch["mask"],
            batch["densepose"],
            timestep=self.config.leffa_timestep_threshold // 2,
            layers=self.capture_layers or list(self.model.layer_names),
            seed=self.config.seed,
        )

    # -- run ------------------------------------------------------------------------------------------------------

    def run(self, max_steps: int | None = None) -> TrainResult:
        """Train to ``max_steps``; the run folder stays locked until this returns or raises."""
        try:
            return self._run(max_steps)
        finally:
            self.close()

    def _run(self, max_steps: int | None) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        max_steps = max_steps or config.max_steps
        if accelerator.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.output / "config.json") as temp:
                temp.write_text(json.dumps(config.resolved(), indent=2))
        hparams = {k: v for k, v in config.resolved().items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("tensorboard", config=hparams)
        result = TrainResult(
            self.output,
            None,
            self.step,
            resumed_from=self.resume_from,
            notes=list(self.notes),
            processes=accelerator.num_processes,
            micro_batch_size=self.micro_batch,
            accumulation=self.accumulation,
            frozen_parameters=len(self.frozen),
        )
        self.forward.train()
        self.model.vae.eval()
        batches = self._batches()
        started, last = time.perf_counter(), self.step
        while self.step < max_steps:
            totals = torch.zeros(3, device=accelerator.device)
            rate = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler then moves on)
            for _ in range(self.accumulation):
                batch = next(batches)
                with accelerator.accumulate(self.forward):
                    inputs = prepare_inputs(
                        self.model,
                        self.scheduler,
                        batch,
                        self.generator,
                        config.reference_dropout,
                        self.latent_cache,
                        config.snr_gamma,
                    )
                    with accelerator.autocast():
                        total, diffusion, leffa, _ = compute_losses(self.forward, inputs, batch, self.settings)
                    accelerator.backward(total)
                    release_features(self.model)
                    if accelerator.sync_gradients:
                        if config.grad_clip > 0:
                            accelerator.clip_grad_norm_([p for _, p in self._trainable()], config.grad_clip)
                        self.optimizer.step()
                        self.lr_scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                totals += torch.stack([total.detach().float(), diffusion.float(), leffa.float()]) / self.accumulation
            self.step += 1
            if self.ema is not None:
                self.ema.update(self._trainable())
            totals = accelerator.reduce(totals, reduction="mean")
            now = time.perf_counter()
            record = {
                "step": self.step,
                "loss": totals[0].item(),
                "diffusion": totals[1].item(),
                "leffa": totals[2].item(),
                "lr": rate,
            }
            result.history.append(record)
            if self.step % config.log_every == 0 or self.step == max_steps:
                accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=self.step)
            if self.step % config.checkpoint_every == 0 or self.step == max_steps:
                self._save_checkpoint()
            if config.save_every and self.step % config.save_every == 0 and self.step != max_steps:
                self._save_weights(self.output / f"model-step-{self.step:08d}.safetensors")
            if config.validate_every and self.step % config.validate_every == 0:
                self._validate()
            if self.on_step is not None and accelerator.is_main_process:
                speed = (self.step - last) / max(now - started, 1e-9)
                self.on_step(
                    StepReport(
                        self.step, max_steps, record["loss"], record["diffusion"], record["leffa"], speed, record["lr"]
                    )
                )
        result.model_path = self._save_weights(self.output / "model.safetensors")
        result.steps = self.step
        accelerator.end_training()
        return result


def train(
    config: TrainConfig,
    on_step: Callable[[StepReport], None] | None = None,
    validation_hook: ValidationHook | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Run (or resume) training as configured; returns the final model path and the per-step loss history.

    ``overwrite`` deletes the run the output folder holds; without it (or ``config.resume``) such a folder is refused.
    """
    return Trainer(config, on_step=on_step, validation_hook=validation_hook, overwrite=overwrite).run()
