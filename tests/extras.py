"""Tests of the optional extras (serve, demo, the browser): skipped on a machine without them, never in CI.

CI (``CI`` set, as ``.ci/run`` runs) installs ``.[test]``, which includes the extras, and Chromium from the OS
packages; there a missing piece is a failure, so a broken install cannot pass as "skipped".
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

CHROMIUM = os.environ.get("LEFFA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def need(*modules: str) -> None:
    """Skip the calling test module when one of ``modules`` is not installed (fail in CI)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        if in_ci():
            raise RuntimeError(f"CI must install {', '.join(missing)} (pip install -e '.[test]')")
        pytest.skip(f"needs {', '.join(missing)}", allow_module_level=True)


def need_chromium() -> str:
    """The Chromium executable (skip without one; fail in CI)."""
    if CHROMIUM is None:
        if in_ci():
            raise RuntimeError("CI must install Chromium (.ci/run: apt-get install -y chromium)")
        pytest.skip("needs chromium (apt-get install -y chromium)", allow_module_level=True)
    return CHROMIUM
