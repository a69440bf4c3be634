"""Atomic file writes: write to a temporary file beside the target, then rename, so no half-written output stays."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(temp)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def save_image(image, path: str | Path) -> None:
    """Save a PIL image atomically; the format follows the target's suffix (PNG by default)."""
    path = Path(path)
    with atomic_path(path) as temp:
        image.save(temp, format=(path.suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"))
