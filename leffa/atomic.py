"""Atomic file writes: write to a temporary file beside the target, then rename, so no half-written output stays.

Also the one check that a destination can be written at all (``ensure_writable_destination``), made before any
heavy work so a read-only folder or a file where a folder should be fails at once, not after the sampling.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from leffa.errors import LeffaError


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(temp)
        # mkstemp makes the file private, and a writer may recreate it private (safetensors' save_file does): the
        # published file follows the user's umask.
        os.chmod(temp, 0o666 & ~_umask())
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


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``/`` at worst)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def ensure_writable_destination(path: str | Path, kind: str = "file", role: str = "") -> Path:
    """Refuse a destination that cannot be written, before any heavy work (model loading, sampling, training).

    ``kind`` says what will be written at ``path``:

    - ``"file"``: a file created or replaced (atomically, so its folder must take new files); not a folder.
    - ``"folder"``: a folder created if missing and written into (run folders, batch outputs); not a file.
    - ``"whole-folder"``: a folder replaced as a whole (``replace_folder``), so its parent must take new entries.

    Every missing parent must come under a real folder (not a file), and the folder that will receive new entries is
    probed by creating and removing a hidden file in it, so permissions, read-only mounts and full disks show up as
    they would at write time (even for root, for whom ``os.access`` always says yes). ``role`` (e.g. ``"-o"``)
    prefixes the one-line ``LeffaError``. Leaves nothing behind; returns ``path`` as a ``Path``.
    """
    if kind not in ("file", "folder", "whole-folder"):
        raise ValueError(f"kind must be 'file', 'folder' or 'whole-folder', not {kind!r}")
    path = Path(path).expanduser()
    name = f"{role} {path}" if role else str(path)
    if kind == "file" and path.is_dir():
        raise LeffaError(f"{name}: is a folder; give a file name")
    if kind != "file" and os.path.lexists(path) and not path.is_dir():
        raise LeffaError(f"{name}: is a file, not a folder; give a folder (or remove the file)")
    existing = _nearest_existing(path if kind == "folder" else path.parent)
    if not existing.is_dir():
        raise LeffaError(f"{name}: {existing} is a file, not a folder, so nothing can be written under it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".leffa-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = (error.strerror or type(error).__name__).lower()
        raise LeffaError(f"{name}: cannot write in {existing} ({reason})") from None
    return path


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step with Linux's ``renameat2(RENAME_EXCHANGE)``; ``False`` where that is unavailable."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first))


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replace_folder(path: str | Path):
    """Yield a fresh hidden folder beside ``path``; on success it replaces ``path`` as a whole, on error it is removed.

    So a reader (or a kill at any moment) sees either the old complete folder or the new complete one, never a mix.
    The swap is one ``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere the old folder is renamed aside first (a
    kill between the two renames leaves it as ``.NAME.old-*`` beside the missing target). The new folder gets the
    user's umask (``mkdtemp`` alone would make it private).
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        os.chmod(temp, 0o777 & ~_umask())
        yield temp
        if path.is_dir():
            if _exchange(temp, path):
                shutil.rmtree(temp)  # temp now holds the old folder
                return
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old)
            os.replace(temp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
