"""``manifest.json`` of an ONNX export folder: names, shapes, dtypes and the ``LeffaConfig`` of the graphs.

Its own module because both sides need it: ``leffa.export.graphs`` writes it, ``leffa.export.backend`` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from leffa.atomic import atomic_path
from leffa.errors import LeffaError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "leffa-onnx/2"  # /2 adds each file's size and SHA-256 ("checksums")


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    """Write ``manifest`` as ``directory/manifest.json`` (atomically); returns its path."""
    path = Path(directory) / MANIFEST
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: str | Path) -> dict:
    """The manifest of an export folder; a missing or foreign one is a one-line error."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise LeffaError(f"{directory}: not an ONNX export folder (no {MANIFEST}); make one with `leffa export --onnx`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LeffaError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(manifest, dict):
        raise LeffaError(f"{path}: not an export manifest (expected a JSON object)")
    if manifest.get("format") == "leffa-onnx/1":
        raise LeffaError(f"{path}: written by an older leffa without file checksums; export the model again")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise LeffaError(f"{path}: unknown format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    return manifest
