"""The HTTP API (``leffa serve``): try-on and pose transfer for applications, as PNGs over multipart uploads.

    POST /tryon   person, garment files (+ optional mask, densepose files); form fields garment_type, steps,
                  guidance, seed, repaint, mask_style, mask_grow, mask_shrink, garment_length -> image/png
    POST /pose    person, target files (+ optional densepose); steps, guidance, seed -> image/png
    GET  /health  {"status", "model", "device", "dtype", "size", "pose_model", "queue": {...}}
    GET  /docs    the OpenAPI page (FastAPI's)

The pipelines are loaded once by the caller and every generation runs on one ``Worker`` thread behind a bounded
queue: a request that finds it full is answered 503 with ``Retry-After`` at once. Uploads are opened by
``leffa.images`` (``Upload``), so a bad file gets the one-line message the CLI gives for the same file, as a 4xx
JSON ``{"error": message}``: 400 for a bad input or option, 413 for an upload or image over the limits, 422 for a
missing or mistyped field, 503 for a full queue, 404 for pose transfer on a server without a pose model.
Cheap checks (options, image headers and pixel counts) run before a request is queued; reading the pixels and the
automatic conditions run on the worker with the generation.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from leffa.app.worker import QueueFull, Worker
from leffa.errors import LeffaError
from leffa.images import Upload, image_size
from leffa.mask_edit import MaskEdit
from leffa.pipeline import GARMENT_TYPES
from leffa.sampler import SamplerOptions, check_seed

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may ask: bytes per uploaded file, pixels per image, denoising steps, pending requests."""

    upload_bytes: int = 20 * MB
    pixels: int = 16_000_000
    steps: int = 100
    queue: int = 8

    @property
    def body_bytes(self) -> int:
        """A whole request: four files and the form fields."""
        return 4 * self.upload_bytes + MB


class TooLarge(LeffaError):
    """An upload or image over the server's limits (HTTP 413)."""


class NotServed(LeffaError):
    """A route this server has no model for (HTTP 404)."""


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read(upload: UploadFile | None, role: str, limits: Limits) -> Upload | None:
    """An uploaded file as an ``Upload`` (``None`` when absent or an empty optional field), its header checked."""
    if upload is None:
        return None
    data = await upload.read(limits.upload_bytes + 1)
    name = upload.filename or role
    if not data and not upload.filename:
        return None
    if len(data) > limits.upload_bytes:
        raise TooLarge(f"{name}: {role} is larger than {limits.upload_bytes / MB:g} MB, the most this server accepts")
    file = Upload(name, data)
    height, width = image_size(file, role)
    if height * width > limits.pixels:
        raise TooLarge(
            f"{name}: {role} is {width}x{height}, too large (at most {limits.pixels / 1e6:g} MP on this server)"
        )
    return file


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _header(notes: list[str]) -> str:
    return " | ".join(notes).encode("ascii", "backslashreplace").decode("ascii")


def _options(steps: int, guidance: float, seed: int, limits: Limits) -> SamplerOptions:
    check_seed(seed)
    if steps > limits.steps:
        raise LeffaError(f"steps {steps}: at most {limits.steps} on this server", "steps")
    return SamplerOptions(steps=steps, guidance=guidance).check()


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 (by Content-Length before reading, or
    once the bytes received pass it) instead of being parsed."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body is larger than {self.limit / MB:g} MB, the most this server accepts"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _error(413, message)(scope, receive, send)
        received, over, started = 0, False, False

        async def counted_receive():
            nonlocal received, over
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return event

        async def guarded_send(event):
            nonlocal started
            if over and not started:
                started = True
                return await _error(413, message)(scope, receive, send)
            if over:
                return None
            started = started or event["type"] == "http.response.start"
            return await send(event)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
                await _error(413, message)(scope, receive, send)


def create_app(tryon, pose=None, limits: Limits = Limits()) -> FastAPI:
    """The FastAPI app serving ``tryon`` (a ``TryOnPipeline``) and, when given, ``pose`` (a ``PosePipeline``)."""
    app = FastAPI(
        title="leffa",
        version=_version(),
        description="Virtual try-on and pose transfer with Leffa. "
        "Images go in as multipart files and come back as PNG.",
    )
    worker = Worker(limits.queue)
    app.state.worker = worker
    app.state.limits = limits
    app.add_middleware(_BodyLimit, limit=limits.body_bytes)

    @app.exception_handler(LeffaError)
    async def leffa_error(request: Request, error: LeffaError):
        status = 413 if isinstance(error, TooLarge) else 404 if isinstance(error, NotServed) else 400
        return _error(status, error.message)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull):
        return _error(503, str(error), {"Retry-After": str(error.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{field}: {str(first.get('msg', 'invalid')).lower()}")

    async def run(call) -> Response:
        output = await asyncio.wrap_future(worker.submit(call))
        return Response(
            _png(output.images[0]),
            media_type="image/png",
            headers={"X-Leffa-Notes": _header(output.notes)} if output.notes else None,
        )

    png: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/png": {}}, "description": "the result, at the person photo's size"}
    }

    @app.post("/tryon", response_class=Response, responses=png, summary="Dress a person in a garment")
    async def tryon_route(
        person: UploadFile = File(..., description="Person photo."),
        garment: UploadFile = File(..., description="Garment image."),
        mask: UploadFile | None = File(
            None, description="Mask, the photo's size, white = regenerate (default: automatic)."
        ),
        densepose: UploadFile | None = File(
            None, description="DensePose rendering, the photo's size (default: automatic)."
        ),
        garment_type: str = Form("upper_body", description="upper_body, lower_body or dresses."),
        steps: int = Form(30),
        guidance: float = Form(2.5),
        seed: int = Form(42),
        repaint: bool = Form(False, description="Keep the original pixels outside a feathered mask."),
        mask_style: str = Form("upstream", description="Automatic mask rules: upstream or tight."),
        mask_grow: int = Form(0, description="Grow the mask by this many pixels."),
        mask_shrink: int = Form(0, description="Shrink the mask by this many pixels."),
        garment_length: float | None = Form(
            None, description="lower_body and dresses: fraction (0-1] of the mask's height kept from its top."
        ),
    ) -> Response:
        if garment_type not in GARMENT_TYPES:
            raise LeffaError(f"garment_type {garment_type!r}: choose one of {', '.join(GARMENT_TYPES)}")
        options = _options(steps, guidance, seed, limits)
        edit = MaskEdit(mask_grow, mask_shrink, garment_length).check(garment_type)
        files = [
            await _read(upload, role, limits)
            for upload, role in (
                (person, "person photo"),
                (garment, "garment image"),
                (mask, "garment mask"),
                (densepose, "DensePose"),
            )
        ]

        def call():
            jobs = tryon.prepare(
                files[0],
                files[1],
                files[2],
                files[3],
                garment_type,
                mask_style=mask_style,
                mask_grow=edit.grow,
                mask_shrink=edit.shrink,
                garment_length=edit.length,
            )
            return tryon.generate(jobs, options, seed=seed, repaint=repaint)

        return await run(call)

    @app.post("/pose", response_class=Response, responses=png, summary="Show a person in another photo's pose")
    async def pose_route(
        person: UploadFile = File(..., description="Photo of the person to show."),
        target: UploadFile = File(..., description="Photo in the target pose (sets the output size)."),
        densepose: UploadFile | None = File(None, description="The target's DensePose IUV image (default: automatic)."),
        steps: int = Form(30),
        guidance: float = Form(2.5),
        seed: int = Form(42),
    ) -> Response:
        if pose is None:
            raise NotServed("pose transfer: this server runs no pose model (start it with --pose-model)")
        options = _options(steps, guidance, seed, limits)
        files = [
            await _read(upload, role, limits)
            for upload, role in ((person, "person photo"), (target, "target pose photo"), (densepose, "DensePose IUV"))
        ]

        def call():
            return pose.generate(pose.prepare(files[0], files[1], files[2]), options, seed=seed)

        return await run(call)

    @app.get("/health", summary="The model, device and queue")
    async def health() -> dict:
        return {
            "status": "ok",
            **describe(tryon),
            "pose_model": describe(pose)["model"] if pose is not None else None,
            "queue": {"pending": worker.pending, "limit": limits.queue, "done": worker.done},
            "limits": {"upload_mb": limits.upload_bytes / MB, "megapixels": limits.pixels / 1e6, "steps": limits.steps},
        }

    app.router.on_shutdown.append(worker.close)
    return app


def describe(pipe) -> dict:
    """Model source, device, dtype and working size of a pipeline, as JSON values."""
    model = pipe.model
    return {
        "model": str(pipe.source),
        "device": str(getattr(model, "device", "cpu")),
        "dtype": str(getattr(model, "dtype", "")).removeprefix("torch."),
        "size": list(pipe.size),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leffa")
    except PackageNotFoundError:
        return "0"


__all__ = ["Limits", "create_app", "describe"]
