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
    resume: Optional[str] = typer.Option(None, "--resume", help="'latest' or a checkpoint folder."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads for torch (default: $OMP_NUM_THREADS, else 1: on a shared 2-core "
        "machine 2 threads ran 17x slower than 1; see docs/training.md)."
    ),
    log_every: Optional[int] = typer.Option(
        None, "--log-every", help="Steps between log lines when the output is not a terminal (default: the config's)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration and exit."),
) -> None:
    """Train a Leffa model. Multi-GPU / multi-node: `accelerate launch -m leffa_cli.app train ...`."""
    import yaml
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from leffa.train.loop import process_state
    from leffa.train.loop import train as run_training
    from leffa.train.config import load_config

    config = load_config(
        config_file,
        task=task, stage=stage, data=data, output=output, base=base, init=init, max_steps=max_steps,
        batch_size=batch_size, micro_batch_size=micro_batch_size, size=size, lr=lr, seed=seed,
        mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, ema=ema,
        leffa_loss=leffa_loss, checkpoint_every=checkpoint_every, validate_every=validate_every,
        num_workers=num_workers, resume=resume, log_every=log_every,
    )
    console = Console(stderr=True)
    if dry_run:
        typer.echo(yaml.safe_dump(config.resolved(), sort_keys=False).rstrip())
        return
    import os

    import torch

    torch.set_num_threads(threads or int(os.environ.get("OMP_NUM_THREADS") or DEFAULT_THREADS))
    is_main = process_state().is_main_process
    log_lines = is_main and not console.is_terminal  # nohup, CI, a pipe: no live bar, a line every log_every steps
    columns = (
        TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not is_main or log_lines) as progress:
        bar = progress.add_task("train", total=config.max_steps, stats="")

        def on_step(report) -> None:
            stats = f"loss {report.loss:.4f}  diffusion {report.diffusion:.4f}"
            if config.leffa_loss:
                stats += f"  leffa {report.leffa:.4f}"
            progress.update(bar, completed=report.step, stats=stats + f"  {report.steps_per_second:.2f} steps/s")
            if log_lines and (report.step % config.log_every == 0 or report.step == report.max_steps):
                console.print(log_line(report, config.leffa_loss), markup=False, highlight=False, soft_wrap=True)

        result = run_training(config, on_step=on_step)
    if is_main:
        if config.resume and result.resumed_from is None:
            console.print(f"no checkpoint in {config.output}; started from step 0")
        console.print(
            f"trained {result.steps} steps on {result.processes} process(es), micro-batch {result.micro_batch_size} "
            f"x accumulation {result.accumulation}; model: {result.model_path}"
        )


DEFAULT_THREADS = 1


def log_line(report, leffa: bool) -> str:
    """One plain line per logging step: time, step, losses, speed and the time left at that speed."""
    import time

    left = (report.max_steps - report.step) / report.steps_per_second if report.steps_per_second > 0 else float("nan")
    eta = time.strftime("%H:%M:%S", time.localtime(time.time() + left)) if left == left else "?"
    parts = [time.strftime("%H:%M:%S"), f"step {report.step}/{report.max_steps}", f"loss {report.loss:.4f}",
             f"diffusion {report.diffusion:.4f}"]
    if leffa:
        parts.append(f"leffa {report.leffa:.4f}")
    parts += [f"lr {report.lr:.2e}", f"{report.steps_per_second:.2f} steps/s",
              f"ETA {eta} ({left / 60:.1f} min)" if left == left else "ETA ?"]
    return "  ".join(parts)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
