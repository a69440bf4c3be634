"""Downloads with cache: model files come from the Hugging Face hub (or a mirror) through ``huggingface_hub``.

Everything downloaded lands in the hub cache (``HF_HOME`` / ``HF_HUB_CACHE``); ``offline=True`` (or
``HF_HUB_OFFLINE=1``) uses the cache alone. A missing file becomes one line naming the file and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from leffa.errors import LeffaError

UPSTREAM_REPO = "franciszzj/Leffa"


def hub_endpoint() -> str | None:
    """A mirror to use instead of huggingface.co (``LEFFA_HUB_ENDPOINT`` or ``HF_ENDPOINT``), if any."""
    return os.environ.get("LEFFA_HUB_ENDPOINT") or os.environ.get("HF_ENDPOINT")


def fetch(
    filename: str,
    repo_id: str = UPSTREAM_REPO,
    offline: bool = False,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> Path:
    """Path of ``filename`` from hub repository ``repo_id``, downloading it into the cache when needed."""
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline,
                endpoint=endpoint or hub_endpoint(),
            )
        )
    except LocalEntryNotFoundError:
        why = "offline is set" if offline else "the hub is unreachable"
        raise LeffaError(
            f"{repo_id}/{filename}: not in the local cache and {why}; download it from "
            f"https://huggingface.co/{repo_id}/blob/main/{filename} and pass its local path instead",
            option="offline" if offline else None,
        ) from None
    except RepositoryNotFoundError:
        raise LeffaError(f"{repo_id}: no such hub repository (or it is private)") from None
    except EntryNotFoundError:
        raise LeffaError(f"{repo_id}/{filename}: no such file in the hub repository") from None
    except HfHubHTTPError as error:
        raise LeffaError(f"{repo_id}/{filename}: download failed ({str(error).splitlines()[0]})") from None
