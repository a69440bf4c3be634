"""An OS-level exclusive lock on a folder, so two processes never write one run or export folder at once.

The lock is ``fcntl.flock`` on a small file that holds the holder's pid. The kernel drops it when the holder closes
the file or dies (exit, exception, SIGKILL), so a killed run never leaves a stale lock behind; the file itself
stays (removing it would let a third process lock a fresh file while a second still holds the old one).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import ModuleType

from leffa.errors import LeffaError

fcntl: ModuleType | None
try:
    import fcntl as _fcntl

    fcntl = _fcntl
except ImportError:  # Windows: no flock; the lock is then advisory only through the pid file
    fcntl = None


class FolderLock:
    """Held while alive: ``FolderLock(file, what)`` raises ``LeffaError`` naming ``what`` and the holder's pid."""

    _fd: int | None = None

    def __init__(self, file: str | Path, what: str, hint: str = ""):
        self.file = Path(file)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(self._fd)
                self._fd = None
                raise LeffaError(f"{what}: in use by another process (pid {holder}){hint}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (idempotent); the pid file stays, empty."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        # At interpreter exit os may already be gone; the kernel drops the lock anyway.
        with contextlib.suppress(OSError, TypeError):
            self.release()
