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
    is_main = process_state().is_main_process
    trainer = Trainer(config, overwrite=overwrite)  # claims and locks --output before any heavy work
    if is_main:
        for note in trainer.notes:
            console.print(f"leffa: note: {note}", markup=False, highlight=False, soft_wrap=True)
        if trainer.resume_from is not None:
            console.print(f"resumed from step {trainer.step} ({trainer.resume_from})", markup=False, highlight=False,
                          soft_wrap=True)
    columns = (
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[stats]}"),
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
