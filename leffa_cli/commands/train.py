"""``leffa train``: train or fine-tune a Leffa model (stage presets from the paper, accelerate for multi-GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

STAGE_HELP = "Paper stage: 1 low-res, 2 high-res, 3 high-res fine-tuning with the Leffa loss (from stage 2's model)."


def train(
    task: Optional[str] = typer.Option(None, "--task", help="vton (virtual try-on) or pose (pose transfer)."),
    stage: Optional[int] = typer.Option(None, "--stage", help=STAGE_HELP),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML or YAML file of training settings."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder (VITON-HD, DressCode or DeepFashion layout)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Run folder: checkpoints, logs, model.safetensors."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model folder or hub id (SD1.5-inpainting / SDXL-inpainting)."),
    init: Optional[str] = typer.Option(None, "--init", help="'base' (base UNet weights), 'random', or a checkpoint file."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch per optimizer step."),
    micro_batch_size: Optional[int] = typer.Option(
        None, "--micro-batch-size", help="Per-GPU batch per forward pass; the rest is gradient accumulation."
    ),
    size: Optional[str] = typer.Option(None, "--size", help="Training image size HxW, e.g. 1024x768."),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no, fp16 or bf16."),
    gradient_checkpointing: Optional[bool] = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward."
    ),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an EMA of the weights and save it."),
    leffa_loss: Optional[bool] = typer.Option(None, "--leffa-loss/--no-leffa-loss", help="Override the stage's choice."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints."),
    validate_every: Optional[int] = typer.Option(None, "--validate-every", help="Steps between previews (0: never)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Data-loading worker processes."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="'latest' (the newest complete checkpoint in --output) or a checkpoint folder."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete the run --output holds (checkpoints, model, logs) and start over."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration and exit."),
) -> None:
    """Train a Leffa model. Multi-GPU / multi-node: `accelerate launch -m leffa_cli.app train ...`."""
    import yaml
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from leffa.train.loop import Trainer, process_state
    from leffa.train.config import load_config

    config = load_config(
        config_file,
        task=task, stage=stage, data=data, output=output, base=base, init=init, max_steps=max_steps,
        batch_size=batch_size, micro_batch_size=micro_batch_size, size=size, lr=lr, seed=seed,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, ema=ema,
        leffa_loss=leffa_loss, checkpoint_every=checkpoint_every, validate_every=validate_every,
        num_workers=num_workers, resume=resume,
    )
    console = Console(stderr=True)
    if dry_run:
        typer.echo(yaml.safe_dump(config.resolved(), sort_keys=False).rstrip())
        return
    is_main = process_state().is_main_process
    trainer = Trainer(config, overwrite=overwrite)  # claims and locks --output before any heavy work
    if is_main:
        for note in trainer.notes:
            console.print(f"leffa: note: {note}", markup=False, highlight=False, soft_wrap=True)
        if trainer.resume_from is not None:
            console.print(f"resumed from step {trainer.step} ({trainer.resume_from})", markup=False, highlight=False,
                          soft_wrap=True)
    columns = (
        TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not is_main) as progress:
        bar = progress.add_task("train", total=config.max_steps, completed=trainer.step, stats="")

        def on_step(report) -> None:
            stats = f"loss {report.loss:.4f}  diffusion {report.diffusion:.4f}"
            if config.leffa_loss:
                stats += f"  leffa {report.leffa:.4f}"
            progress.update(bar, completed=report.step, stats=stats + f"  {report.steps_per_second:.2f} steps/s")

        trainer.on_step = on_step
        result = trainer.run()
    if is_main:
        console.print(
            f"trained {result.steps} steps on {result.processes} process(es), micro-batch {result.micro_batch_size} "
            f"x accumulation {result.accumulation}; model: {result.model_path}"
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
