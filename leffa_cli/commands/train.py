"""``leffa train``: train or fine-tune a Leffa model (stage presets from the paper, accelerate for multi-GPU)."""

from __future__ import annotations

from pathlib import Path

import typer

from leffa.train.config import TrainConfig
from leffa_cli.fields import with_model_options


@with_model_options(TrainConfig)
def train(
    config_file: Path | None = typer.Option(None, "--config", help="TOML or YAML file of training settings."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete the run --output holds (checkpoints, model, logs) and start over."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="CPU threads for torch (default: $OMP_NUM_THREADS, else 1: on a shared 2-core "
        "machine 2 threads ran 17x slower than 1; see docs/training.md).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration and exit."),
    **settings,
) -> None:
    """Train a Leffa model. Multi-GPU / multi-node: `accelerate launch -m leffa_cli.app train ...`."""
    import yaml
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from leffa.train.config import load_config
    from leffa.train.loop import Trainer, process_state

    # Every TrainConfig field is an option (``--lr``, ``--ema/--no-ema``, ...); options not given are None.
    config = load_config(config_file, **settings)
    console = Console(stderr=True)
    if dry_run:
        typer.echo(yaml.safe_dump(config.resolved(), sort_keys=False).rstrip())
        return
    import os

    import torch

    torch.set_num_threads(threads or int(os.environ.get("OMP_NUM_THREADS") or DEFAULT_THREADS))
    is_main = process_state().is_main_process
    trainer = Trainer(config, overwrite=overwrite)  # claims and locks --output before any heavy work
    if is_main:
        for note in trainer.notes:
            console.print(f"leffa: note: {note}", markup=False, highlight=False, soft_wrap=True)
        if trainer.resume_from is not None:
            console.print(
                f"resumed from step {trainer.step} ({trainer.resume_from})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    log_lines = is_main and not console.is_terminal  # nohup, CI, a pipe: no live bar, a line every log_every steps
    columns = (
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not is_main or log_lines) as progress:
        bar = progress.add_task("train", total=config.max_steps, completed=trainer.step, stats="")

        def on_step(report) -> None:
            stats = f"loss {report.loss:.4f}  diffusion {report.diffusion:.4f}"
            if config.leffa_loss:
                stats += f"  leffa {report.leffa:.4f}"
            progress.update(bar, completed=report.step, stats=stats + f"  {report.steps_per_second:.2f} steps/s")
            if log_lines and (report.step % config.log_every == 0 or report.step == report.max_steps):
                console.print(log_line(report, config.leffa_loss), markup=False, highlight=False, soft_wrap=True)

        trainer.on_step = on_step
        result = trainer.run()
    if is_main:
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
    parts = [
        time.strftime("%H:%M:%S"),
        f"step {report.step}/{report.max_steps}",
        f"loss {report.loss:.4f}",
        f"diffusion {report.diffusion:.4f}",
    ]
    if leffa:
        parts.append(f"leffa {report.leffa:.4f}")
    parts += [
        f"lr {report.lr:.2e}",
        f"{report.steps_per_second:.2f} steps/s",
        f"ETA {eta} ({left / 60:.1f} min)" if left == left else "ETA ?",
    ]
    return "  ".join(parts)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
