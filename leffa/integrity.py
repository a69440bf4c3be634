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


def weights_fingerprint(module) -> str:
    """A short digest of a model's weights: names, shapes, dtypes and two sums per tensor, computed where the
    weights live (no copy of a multi-GB model to the host). Two trainings of one architecture differ in it; it is
    for telling runs apart (``leffa eval --run`` resuming), not a cryptographic identity of the file."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            values = tensor.detach().double()
            sums = torch.stack([values.sum(), values.abs().sum()]).cpu().tolist()
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}{sums[0]:.10e}{sums[1]:.10e}".encode())
    return digest.hexdigest()[:16]
