"""Fault injection: kills at random points, damaged files, unwritable destinations, two runs racing for a folder.

After each fault, nothing already written is lost and every output that exists is complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from leffa.atomic import ensure_writable_destination
from leffa.errors import LeffaError


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only by patching the file-creation call (the tests run as root, who ignores 0555).

    Returns a set: every folder added to it refuses new files as a 0555 folder would for a normal user.
    """
    frozen: set[Path] = set()
    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def refuse(dir):
        if dir is not None and Path(dir).resolve() in {p.resolve() for p in frozen}:
            raise PermissionError(13, "Permission denied", str(dir))

    def mkstemp(*args, dir=None, **kwargs):
        refuse(dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdtemp(*args, dir=None, **kwargs):
        refuse(dir)
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    return frozen


# -- unwritable destinations --------------------------------------------------------------------------------------


def test_destination_check_names_the_problem(tmp_path, read_only):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(LeffaError, match=r"^-o .*a-file/out.png: .*a-file is a file, not a folder"):
        ensure_writable_destination(tmp_path / "a-file" / "out.png", "file", "-o")
    with pytest.raises(LeffaError, match="is a file, not a folder"):
        ensure_writable_destination(tmp_path / "a-file", "folder")
    with pytest.raises(LeffaError, match="is a folder; give a file name"):
        ensure_writable_destination(tmp_path, "file")
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    read_only.add(frozen)
    for kind, target in (("file", frozen / "deep" / "x.json"), ("folder", frozen / "run"), ("folder", frozen),
                         ("whole-folder", frozen / "export")):
        with pytest.raises(LeffaError, match=r"cannot write in .*frozen \(permission denied\)"):
            ensure_writable_destination(target, kind)
    assert ensure_writable_destination(tmp_path / "new" / "deeper", "folder") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "frozen"]
