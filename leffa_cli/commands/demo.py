"""``leffa demo``: the web demo (``leffa.app.demo``) with mask editing; needs the ``demo`` extra."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from leffa.errors import LeffaError
from leffa_cli.commands.serve import need_extra
from leffa_cli.options import BASE, DEVICE, DTYPE, HOST, MODEL, OFFLINE, SIZE, STEPS, console, load_pipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def demo(
    model: str | None = MODEL,
    host: str = HOST,
    port: int = typer.Option(7860, "--port", help="Port to listen on (0: any free port)."),
    examples: Path | None = typer.Option(
        None,
        "--examples",
        help="Folder with person.jpg, garment.jpg, mask.png "
        "and densepose.jpg to preload (default: the repository's examples/).",
    ),
    steps: int = STEPS,
    base: Path | None = BASE,
    offline: bool = OFFLINE,
    dtype: str = DTYPE,
    device: str = DEVICE,
    size: str | None = SIZE,
) -> None:
    """Start the web demo: upload, check and correct the mask, generate, compare, download. Prints its URL."""
    need_extra("demo", "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline demo
    from leffa.app.demo import build_demo
    from leffa.images import parse_size
    from leffa.pipelines import TryOnPipeline

    if not 0 <= port <= 65535:
        raise LeffaError(f"--port {port}: out of range")
    if examples is not None and not examples.is_dir():
        raise LeffaError(f"--examples {examples}: folder not found")
    working = parse_size(size) if size else None
    pipe = load_pipeline(TryOnPipeline, model, base, offline, device, dtype, working)
    app = build_demo(pipe, examples or (EXAMPLES if EXAMPLES.is_dir() else None), steps=steps)
    app.launch(
        server_name=host, server_port=port or free_port(host), quiet=True, prevent_thread_lock=True, footer_links=[]
    )
    typer.echo(f"leffa demo: {app.local_url}")
    console.print("press Ctrl+C to stop", markup=False)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        app.close()


def free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
