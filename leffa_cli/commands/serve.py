"""``leffa serve``: the HTTP API (``leffa.app.server``) on uvicorn; needs the ``serve`` extra."""

from __future__ import annotations

from pathlib import Path

import typer

from leffa.errors import LeffaError
from leffa_cli.options import BASE, DEVICE, DTYPE, HOST, MODEL, OFFLINE, SIZE, console, load_pipeline


def need_extra(extra: str, *modules: str) -> None:
    """Refuse in one line when an optional extra's modules are missing."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise LeffaError(f"leffa {extra} needs {', '.join(missing)}: pip install 'leffa[{extra}]'")


def serve(
    model: str | None = MODEL,
    pose_model: str | None = typer.Option(
        None,
        "--pose-model",
        help="Also serve POST /pose with this model (the same spec as --model shares its weights). Default: no /pose.",
    ),
    host: str = HOST,
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port)."),
    queue: int = typer.Option(8, "--queue", help="Requests generating or waiting; more are answered 503."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest uploaded file (413 beyond)."),
    max_megapixels: float = typer.Option(16.0, "--max-megapixels", help="Largest image (413 beyond)."),
    max_steps: int = typer.Option(100, "--max-steps", help="Most denoising steps a request may ask for."),
    base: Path | None = BASE,
    offline: bool = OFFLINE,
    dtype: str = DTYPE,
    device: str = DEVICE,
    size: str | None = SIZE,
) -> None:
    """Serve try-on (and pose transfer) over HTTP: POST /tryon, POST /pose, GET /health, docs at /docs."""
    need_extra("serve", "fastapi", "uvicorn", "multipart")
    from leffa.app.server import MB, Limits, create_app
    from leffa.images import parse_size
    from leffa.pipelines import PosePipeline, TryOnPipeline

    for name, value, least in (("--queue", queue, 1), ("--max-steps", max_steps, 1), ("--port", port, 0)):
        if value < least or (name == "--port" and value > 65535):
            raise LeffaError(f"{name} {value}: out of range")
    if not (max_upload_mb > 0 and max_megapixels > 0):
        raise LeffaError("--max-upload-mb and --max-megapixels must be positive")
    limits = Limits(
        upload_bytes=int(max_upload_mb * MB), pixels=int(max_megapixels * 1e6), steps=max_steps, queue=queue
    )
    working = parse_size(size) if size else None
    tryon = load_pipeline(TryOnPipeline, model, base, offline, device, dtype, working)
    pose = None
    if pose_model is not None:
        if pose_model == model:
            pose = PosePipeline(tryon.model, tryon.size, tryon.source, offline=offline)
        else:
            pose = load_pipeline(PosePipeline, pose_model, base, offline, device, dtype, working)
    run(create_app(tryon, pose, limits), host, port)


def run(app, host: str, port: int) -> None:
    """uvicorn on ``host:port``, printing the URL once it listens."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    original = server.startup

    async def startup(sockets=None):
        await original(sockets)
        for listener in server.servers:
            for sock in listener.sockets:
                bound_host, bound_port = sock.getsockname()[:2]
                shown = f"[{bound_host}]" if ":" in bound_host else bound_host
                typer.echo(f"leffa serve: http://{shown}:{bound_port} (API docs at /docs)")
        console.print("press Ctrl+C to stop", markup=False)

    server.startup = startup
    server.run()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
