"""Downloads with cache: model files come from the Hugging Face hub (or a mirror) through ``huggingface_hub``.

Where a file is looked for, in order:

1. the plain weights folder ``weights_folder() / REPO / FILE`` (``$LEFFA_WEIGHTS``, default
   ``~/.cache/leffa/weights``): copy a file there by hand (``hf download REPO FILE --local-dir FOLDER/REPO`` writes
   exactly this layout) and leffa never asks the network for it;
2. the hub cache (``HF_HOME`` / ``HF_HUB_CACHE``);
3. the hub itself, unless offline mode is on (``--offline``, ``HF_HUB_OFFLINE=1``) or one short connection check
   finds the hub unreachable: then the answer comes at once, not after huggingface_hub's retries.

A file that is nowhere becomes ``MissingWeights``: one line naming the file, why it could not be fetched, the URL,
the folder to put it in, and (added by callers that know) what avoids the need for it.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from leffa.errors import LeffaError

UPSTREAM_REPO = "franciszzj/Leffa"
DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT = 3.0  # seconds for the one reachability check (a live hub answers in well under a second)
_TRUE = ("1", "ON", "YES", "TRUE")


def hub_endpoint() -> str | None:
    """A mirror to use instead of huggingface.co (``LEFFA_HUB_ENDPOINT`` or ``HF_ENDPOINT``), if any."""
    return os.environ.get("LEFFA_HUB_ENDPOINT") or os.environ.get("HF_ENDPOINT")


def weights_folder() -> Path:
    """The plain folder searched first: ``$LEFFA_WEIGHTS``, else ``$XDG_CACHE_HOME/leffa/weights`` (``~/.cache``)."""
    if os.environ.get("LEFFA_WEIGHTS"):
        return Path(os.environ["LEFFA_WEIGHTS"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "leffa" / "weights"


def offline_reason(offline: bool = False) -> str | None:
    """Why the network must not be used (``--offline``, ``HF_HUB_OFFLINE``), or ``None``."""
    if offline:
        return "--offline was given"
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name, "")
        if value.strip().upper() in _TRUE:
            return f"{name}={value} is set"
    return None


def unreachable_reason(url: str) -> str | None:
    """``None`` when one TCP connection to ``url``'s host (or to the proxy that would carry it) opens within
    ``CONNECT_TIMEOUT`` seconds, else why not. The answer is reused for ``RECHECK_AFTER`` seconds."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, label = proxy_parts.hostname, proxy_parts.port or 80, f"the proxy {proxy_parts.netloc}"
    else:
        host, port, label = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), parts.netloc
    return _connect(host or "", port, label)


_checked: dict[tuple[str, int], tuple[float, str | None]] = {}
RECHECK_AFTER = 60.0  # seconds: one check serves all the files of a command, a long-lived process checks again


def _connect(host: str, port: int, label: str) -> str | None:
    seen = _checked.get((host, port))
    if seen is not None and time.monotonic() - seen[0] < RECHECK_AFTER:
        return seen[1]
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            reason = None
    except OSError as error:
        detail = "timed out" if isinstance(error, TimeoutError) else (error.strerror or type(error).__name__)
        reason = f"{label} is unreachable ({detail})"
    _checked[(host, port)] = (time.monotonic(), reason)
    return reason


class MissingWeights(LeffaError):
    """A weights file that is neither in the weights folder nor in a cache, and cannot be downloaded now."""

    def __init__(self, filename: str, reason: str, url: str, folder: Path, what: str = "", avoid: tuple = ()):
        self.filename, self.reason, self.url, self.folder, self.what = filename, reason, url, folder, what
        self.avoid = tuple(avoid)
        name = f"{Path(filename).name} ({what})" if what else Path(filename).name
        message = f"{name} is not on this machine and {reason}: download {url} into {folder}/"
        for way in self.avoid:
            message += f", or {way}"
        super().__init__(message)

    def or_else(self, way: str) -> MissingWeights:
        """The same error with one more way around it (an option of the command that hit it)."""
        return MissingWeights(self.filename, self.reason, self.url, self.folder, self.what, (*self.avoid, way))


def fetch(
    filename: str,
    repo_id: str = UPSTREAM_REPO,
    offline: bool = False,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    what: str = "",
) -> Path:
    """Path of ``filename`` of hub repository ``repo_id``: the weights folder, the hub cache, else a download.

    ``what`` names the file for people ("human parsing model"). Raises ``MissingWeights`` at once when the file is
    not local and offline mode is on or the hub is unreachable (no retries).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    local = weights_folder() / repo_id / filename
    if local.is_file():
        return local
    endpoint = (endpoint or hub_endpoint() or DEFAULT_ENDPOINT).rstrip("/")
    reason = offline_reason(offline) or unreachable_reason(endpoint)
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=reason is not None,
                endpoint=endpoint,
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        url = f"{endpoint}/{repo_id}/resolve/{revision or 'main'}/{filename}"
        raise MissingWeights(filename, reason or "the download failed", url, local.parent, what) from None
    except RepositoryNotFoundError:
        raise LeffaError(f"{repo_id}: no such hub repository (or it is private)") from None
    except EntryNotFoundError:
        raise LeffaError(f"{repo_id}/{filename}: no such file in the hub repository") from None
    except HfHubHTTPError as error:
        raise LeffaError(f"{repo_id}/{filename}: download failed ({str(error).splitlines()[0]})") from None


def download_url(url: str, folder: Path, offline: bool = False, what: str = "", sha256_prefix: str = "") -> Path:
    """A file published at a plain URL (a GitHub release, download.pytorch.org), kept in ``folder`` under its own
    name: read from there when present, else downloaded (checked against ``sha256_prefix``) unless offline or
    unreachable, which raise ``MissingWeights`` at once."""
    import torch.hub

    name = urlsplit(url).path.rsplit("/", 1)[-1]
    target = Path(folder) / name
    if target.is_file():
        return target
    reason = offline_reason(offline) or unreachable_reason(url)
    if reason is not None:
        raise MissingWeights(name, reason, url, Path(folder), what)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256_prefix or None, progress=False)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a hash mismatch is a RuntimeError
        raise LeffaError(f"{url}: download failed ({str(error).splitlines()[0]})") from None
    return target
