"""Run folders and checkpoints: who may write a run folder, what counts as a complete checkpoint, what to resume.

A run folder (``--output``) holds one training run: ``config.json``, ``model.safetensors`` (and ``model-step-N``
files), ``checkpoints/step-N/``, ``checkpoints/latest``, ``validation/`` and ``tensorboard/``.

- Ownership: a run holds ``OUTPUT/.lock`` (``leffa.locks.FolderLock``, an ``flock`` the kernel drops when the
  process dies) for its whole life, so a second run into the same folder stops at once naming the holder's pid.
- A fresh run refuses a folder that already holds a run; ``resume`` continues it, ``overwrite`` deletes that run's
  files first. So checkpoint numbering and pruning only ever see the one run (each checkpoint also records the run
  id, and pruning touches only checkpoints of the current run).
- A checkpoint is written into ``.step-N.partial``; its ``manifest.json`` (every file's size and SHA-256) is written
  last and atomically, then the folder is renamed to ``step-N``, then ``latest`` is pointed at it, and only then
  are older checkpoints of the run pruned (never the one ``latest`` names). A checkpoint is complete only when its
  manifest is there and every file matches it, and every process's RNG-state file is there and readable.
- Resume takes the newest complete checkpoint, with a note for each newer incomplete one it passed over, and
  refuses (one line) when checkpoints exist but none is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from leffa.atomic import atomic_path, ensure_writable_destination
from leffa.errors import LeffaError
from leffa.integrity import describe_files, file_problem
from leffa.locks import FolderLock

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "leffa-checkpoint/1"
LOCK_FILE = ".lock"
LATEST = "latest"
# What a run writes at the top of its folder (deleted by ``overwrite``); anything else there is left alone.
RUN_FILES = ("config.json", "model.safetensors", "checkpoints", "validation", "tensorboard")
RUN_GLOBS = ("model-step-*.safetensors",)
RNG_STATE = "random_states_{index}.pkl"  # accelerate's name for a process's Python/NumPy/torch RNG state


def checkpoint_root(output: Path) -> Path:
    return Path(output) / "checkpoints"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


# -- the run folder -------------------------------------------------------------------------------------------------


def run_files(output: Path) -> list[Path]:
    """The files and folders of a previous run in ``output`` (empty when it holds none)."""
    output = Path(output)
    if not output.is_dir():
        return []
    found = [output / name for name in RUN_FILES if (output / name).exists()]
    for pattern in RUN_GLOBS:
        found.extend(sorted(output.glob(pattern)))
    return found


def claim_run_folder(output: Path, resume: str | None, overwrite: bool) -> FolderLock:
    """Check ``output`` can hold this run and lock it; returns the held lock (release it when the run ends).

    A fresh run into a folder with a previous run is refused unless ``overwrite`` (which deletes that run's files
    once the lock is held); ``resume`` and ``overwrite`` exclude each other.
    """
    output = Path(output)
    if resume and overwrite:
        raise LeffaError("--resume and --overwrite: choose one (continue the run in the folder, or replace it)")
    ensure_writable_destination(output, "folder", "--output")
    output.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(
        output / LOCK_FILE,
        str(output),
        hint="; two trainings cannot share a run folder: wait for it or choose another --output",
    )
    try:
        previous = run_files(output)
        if previous and not resume and not overwrite:
            raise LeffaError(
                f"{output}: already holds a training run ({', '.join(p.name for p in previous[:3])}); continue it "
                "with --resume latest, replace it with --overwrite, or choose another --output"
            )
        for stale in output.glob(".*.deleting"):  # left by a kill during an earlier --overwrite
            _remove(stale)
        if overwrite:
            for path in previous:  # hidden first, so a kill midway leaves no half-deleted checkpoint in sight
                hidden = path.with_name(f".{path.name}.deleting")
                os.replace(path, hidden)
                _remove(hidden)
        root = checkpoint_root(output)
        if root.is_dir():
            for stale in root.glob(".step-*"):  # a killed run's unfinished or half-deleted checkpoint; ours alone now
                shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        lock.release()
        raise
    return lock


# -- manifests ------------------------------------------------------------------------------------------------------


def write_manifest(folder: Path, step: int, run_id: str, processes: int) -> Path:
    """Record every file in ``folder`` (size, SHA-256); written last and atomically, it marks the folder complete."""
    folder = Path(folder)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    files = describe_files(folder, names)
    manifest = {"format": MANIFEST_FORMAT, "step": step, "run": run_id, "processes": processes, "files": files}
    with atomic_path(folder / MANIFEST) as temp:
        temp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return folder / MANIFEST


def read_manifest(folder: Path) -> dict | None:
    """The checkpoint's manifest, or ``None`` when missing or unreadable (the checkpoint is then incomplete)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    return manifest


def check_rng_state(path: Path) -> str | None:
    """Why an RNG-state file cannot be used (``None`` if it can): accelerate would skip it silently on load."""
    from accelerate.utils import load

    try:
        states = load(path)
    except Exception as error:
        return f"{path.name} is unreadable ({type(error).__name__})"
    if not isinstance(states, dict) or "torch_manual_seed" not in states:
        return f"{path.name} holds no RNG state"
    return None


def checkpoint_problem(folder: Path, process_index: int | None = None) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or ``None`` when every file is there and matches its manifest.

    Hashing reads every file once (a few seconds per GB). ``process_index`` also unpickles that process's RNG state.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no valid {MANIFEST} (written last, so the save did not finish)"
    for name, expected in manifest["files"].items():
        problem = file_problem(folder, name, expected)
        if problem:
            return problem
    for index in range(int(manifest.get("processes", 1))):
        if RNG_STATE.format(index=index) not in manifest["files"]:
            return f"{RNG_STATE.format(index=index)} (the RNG state) is missing"
    if process_index is not None:
        return check_rng_state(folder / RNG_STATE.format(index=process_index))
    return None


# -- resuming -------------------------------------------------------------------------------------------------------


@dataclass
class ResumePoint:
    """The checkpoint to resume (``None``: start from step 0) and notes on checkpoints passed over."""

    folder: Path | None
    step: int = 0
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)


def checkpoint_step(folder: Path) -> int:
    try:
        return int(Path(folder).name.removeprefix("step-"))
    except ValueError:
        return -1


def _complete_manifest(folder: Path) -> dict:
    """The manifest of a checkpoint ``checkpoint_problem`` just found complete."""
    manifest = read_manifest(folder)
    if manifest is None:  # only another process changing the folder meanwhile gets here
        raise LeffaError(f"{folder}: the checkpoint manifest became unreadable while resuming")
    return manifest


def find_resume_point(output: Path, resume: str, process_index: int = 0) -> ResumePoint:
    """``latest``: the newest complete checkpoint of ``output`` (notes for newer incomplete ones); else the folder
    ``resume`` names, which must be complete. Refuses when checkpoints exist but none is complete."""
    if resume != "latest":
        folder = Path(resume)
        if not folder.is_dir():
            raise LeffaError(f"--resume {folder}: not a checkpoint folder")
        problem = checkpoint_problem(folder, process_index)
        if problem:
            raise LeffaError(f"--resume {folder}: incomplete checkpoint, cannot resume from it: {problem}")
        manifest = _complete_manifest(folder)
        return ResumePoint(folder, int(manifest["step"]), manifest.get("run"))
    root = checkpoint_root(output)
    candidates = sorted((p for p in root.glob("step-*") if p.is_dir()), key=checkpoint_step) if root.is_dir() else []
    notes: list[str] = []
    for folder in reversed(candidates):
        problem = checkpoint_problem(folder, process_index)
        if problem is None:
            manifest = _complete_manifest(folder)
            return ResumePoint(folder, int(manifest["step"]), manifest.get("run"), notes)
        notes.append(f"{folder}: incomplete checkpoint, skipped ({problem})")
    if candidates:
        raise LeffaError(
            f"{root}: no complete checkpoint to resume ({notes[0].split(': ', 1)[1]}); "
            "start over with --overwrite (deletes the run) or choose another --output"
        )
    weights = [p for p in run_files(output) if p.suffix == ".safetensors"]
    if weights:  # a run that saved weights but no checkpoint: starting over would replace them
        raise LeffaError(
            f"{output}: holds a training run ({weights[0].name}) but no checkpoint to resume; "
            "start over with --overwrite (deletes the run) or choose another --output"
        )
    return ResumePoint(None, notes=[f"no checkpoint in {output}; starting from step 0"])


def checkpoint_config(folder: Path):
    """The ``LeffaConfig`` a checkpoint was saved with (one-line error when unreadable)."""
    from leffa.model import LeffaConfig

    path = Path(folder) / "leffa_config.json"
    try:
        text = path.read_text()
    except OSError as error:
        raise LeffaError(f"{path}: cannot be read ({error.strerror})") from None
    return LeffaConfig.from_json(text, path)


# -- publishing and pruning -----------------------------------------------------------------------------------------


def partial_folder(output: Path, step: int) -> Path:
    return checkpoint_root(output) / f".{step_name(step)}.partial"


def publish(partial: Path, step: int, run_id: str, processes: int, keep: int) -> Path:
    """Seal ``partial`` (manifest last), rename it to ``step-N``, point ``latest`` at it, prune older ones of the run.

    Main process only, after every process has written its files into ``partial``.
    """
    root = partial.parent
    final = root / step_name(step)
    write_manifest(partial, step, run_id, processes)
    if final.exists():  # only possible for this run's own earlier save of the same step
        _discard(final)
    os.replace(partial, final)
    with atomic_path(root / LATEST) as temp:
        temp.write_text(final.name + "\n")
    prune(root, run_id, keep, protect=final)
    return final


def prune(root: Path, run_id: str, keep: int, protect: Path) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints of run ``run_id`` (never ``protect``, the one ``latest`` names)."""
    ours = [p for p in root.glob("step-*") if p.is_dir() and (read_manifest(p) or {}).get("run") == run_id]
    ours.sort(key=checkpoint_step)
    removed = []
    for old in ours[: max(0, len(ours) - max(1, keep))]:
        if old != protect:
            _discard(old)
            removed.append(old)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def _discard(folder: Path) -> None:
    """Delete a checkpoint so that a kill midway never leaves a half-deleted ``step-N``: hide it first, then delete."""
    hidden = folder.with_name(f".{folder.name}.deleting")
    _remove(hidden)
    os.replace(folder, hidden)
    _remove(hidden)
