"""File sizes and SHA-256 digests recorded in a manifest, and the check that files still match them.

Checkpoints and ONNX exports both write such a manifest last, so a folder whose files all match it was written
completely and has not been damaged since (truncated, bit-flipped, or mixed with files of another save).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, read in 8 MB chunks (a few seconds per GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(folder: str | Path, names) -> dict[str, dict]:
    """``{name: {"size": bytes, "sha256": hex}}`` for the files ``names`` (relative to ``folder``)."""
    folder = Path(folder)
    return {name: {"size": (folder / name).stat().st_size, "sha256": file_digest(folder / name)} for name in names}


def file_problem(folder: str | Path, name: str, expected: dict, hashes: bool = True) -> str | None:
    """Why ``folder/name`` does not match its record ``expected`` (``None`` if it does), in a few words."""
    path = Path(folder) / name
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != expected.get("size"):
        return f"{name} is {size} bytes, the manifest says {expected.get('size')} (truncated or replaced)"
    if hashes and file_digest(path) != expected.get("sha256"):
        return f"{name} does not match its SHA-256 in the manifest (damaged or replaced)"
    return None
