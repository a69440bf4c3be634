"""``leffa export``: ONNX graphs for deployment (``--onnx DIR``) or upstream ``.pth`` -> safetensors."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from leffa.errors import LeffaError


def _load(model: str | None, base: Path | None, task: str, random_init: bool, seed: int):
    """The model to export, resolved as every ``--model`` is (``leffa.weights``), on the CPU. The size it was trained
    at is written into its config, so a dynamic export serves that size by default (``tryon --backend onnx``)."""
    import torch

    from leffa.model import LeffaModel
    from leffa.weights import resolve_model

    if model is not None:
        resolved = resolve_model(model, task=task, base=base)
        if resolved.image_size is not None:
            resolved.model.config.extra["image_size"] = list(resolved.image_size)
        return resolved.model
    if not random_init:
        raise LeffaError("--model: give the model to export (or --random-init with --base for a test export)")
    if base is None:
        raise LeffaError("--random-init needs --base, the base-model folder that defines the architecture")
    torch.manual_seed(seed)
    return LeffaModel.from_base_folder(base, task=task).eval()


def export(
    onnx: Path | None = typer.Option(None, "--onnx", help="Write the four ONNX graphs and manifest.json into DIR."),
    safetensors: Path | None = typer.Option(
        None, "--safetensors", help="Convert this upstream .pth (with --base) into a safetensors file (-o)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model to export with --onnx: viton_hd, dress_code, pose_transfer, synth-tiny, a "
        "local file or folder (our .safetensors, or an upstream .pth + --base), or a hub repo id.",
    ),
    base: Path | None = typer.Option(None, "--base", help="Base-model folder (unet/, vae/, scheduler/ configs)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output .safetensors file for --safetensors."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="fp32 or fp16 (default fp32 for --onnx; --safetensors: fp16 by default, bf16 too)."
    ),
    attention: str = typer.Option(
        "chunked", "--attention", help="chunked (MatMul/Softmax per query chunk) or fused (opset-23 Attention op)."
    ),
    height: int | None = typer.Option(None, "--height", help="Fix the image height (default: dynamic)."),
    width: int | None = typer.Option(None, "--width", help="Fix the image width (default: dynamic)."),
    max_batch: int = typer.Option(2, "--max-batch", help="Largest batch served (CFG doubles it): sizes chunks."),
    max_height: int = typer.Option(1024, "--max-height", help="Largest image height served when dynamic."),
    max_width: int = typer.Option(768, "--max-width", help="Largest image width served when dynamic."),
    check: bool = typer.Option(False, "--check", help="Run the graphs with onnxruntime and compare with torch."),
    task: str = typer.Option("vton", "--task", help="vton or pose (recorded in the config)."),
    random_init: bool = typer.Option(False, "--random-init", help="Export a randomly initialised model (tests)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --random-init and the --check inputs."),
) -> None:
    """Export ONNX graphs (TensorRT-ready) or convert an upstream checkpoint to safetensors."""
    from leffa.atomic import ensure_writable_destination
    from leffa.export.graphs import (
        ExportOptions,
        check_export,
        check_export_destination,
        convert_to_safetensors,
        export_onnx,
    )

    console = Console()
    if (onnx is None) == (safetensors is None):
        raise LeffaError("leffa export: give exactly one of --onnx DIR or --safetensors IN.pth")
    if safetensors is not None:
        if output is None:
            raise LeffaError("--safetensors needs -o OUT.safetensors")
        if base is None:
            raise LeffaError("--safetensors needs --base, the base-model folder the checkpoint was trained from")
        ensure_writable_destination(output, "file", "-o")
        target = dtype or "fp16"
        path = convert_to_safetensors(safetensors, base, output, dtype=target, task=task)
        console.print(f"wrote {path} ({target}, {path.stat().st_size / 1e6:.1f} MB)")
        return
    check_export_destination(onnx)  # before minutes of loading and tracing
    loaded = _load(model, base, task, random_init, seed)
    dtype = dtype or "fp32"
    options = ExportOptions(
        dtype=dtype,
        attention=attention,
        height=height,
        width=width,
        max_batch=max_batch,
        max_height=max_height,
        max_width=max_width,
    )
    manifest = export_onnx(loaded, onnx, options)
    table = Table(title=f"{onnx} ({dtype}, attention {attention}, opset {manifest['opset']})")
    for column in ("graph", "file", "inputs", "outputs"):
        table.add_column(column)
    for name, info in manifest["graphs"].items():
        table.add_row(name, ", ".join(info["files"]), str(len(info["inputs"])), str(len(info["outputs"])))
    console.print(table)
    if check:
        diffs = check_export(loaded, onnx, seed=seed, providers=["CPUExecutionProvider"])
        result = Table(title="onnxruntime (CPU) vs torch, max abs difference")
        result.add_column("graph")
        result.add_column("max abs diff", justify="right")
        for name, value in diffs.items():
            result.add_row(name, f"{value:.3g}")
        console.print(result)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
