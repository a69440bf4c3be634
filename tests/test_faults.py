"""Fault injection: kills at random points, damaged files, unwritable destinations, two runs racing for a folder,
and inputs that would otherwise give garbage with exit 0.

After each fault, nothing already written is lost and every output that exists is complete. Random kill points come
from ``LEFFA_FAULT_SEED`` (default: a fresh seed, printed in every failure message, so a failure can be replayed).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from test_data import make_vitonhd
from test_train import TINY_ARGS, TINY_BASE
from test_train import tiny_config as train_tiny_config

from leffa.atomic import ensure_writable_destination
from leffa.errors import LeffaError
from leffa.locks import FolderLock
from leffa.train import checkpoints

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("LEFFA_FAULT_SEED", random.SystemRandom().randrange(10**6)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
LEFFA = [sys.executable, "-m", "leffa_cli.app"]
# test_train's tiny run at stage 1 with a checkpoint every step, as ``tiny_config`` below.
TRAIN_ARGS = ["train", "--task", "vton", "--stage", "1", *TINY_ARGS, "--checkpoint-every", "1"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a loaded machine, OpenMP threads spinning for a busy core slow tiny runs many times."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def rng():
    return random.Random(SEED)


@pytest.fixture(scope="module")
def vitonhd(tmp_path_factory) -> Path:
    return make_vitonhd(tmp_path_factory.mktemp("data") / "vitonhd", count=6)


def tiny_config(data: Path, output: Path, **overrides):
    """The same run as ``TRAIN_ARGS`` (so the library can resume what the CLI started): test_train's tiny run at
    stage 1 with a checkpoint every step."""
    return train_tiny_config(data, output, **{"stage": 1, "checkpoint_every": 1, **overrides})


class Victim:
    """A ``leffa`` process SIGKILLed ``delay`` seconds after ``when(its pid)`` first holds (by a watcher thread).

    All victims start together when the module starts, so their slow imports overlap with each other and with the
    in-process tests; each test then only collects its victim's outcome.
    """

    def __init__(self, args: list[str], when=None, delay: float = 0.0):
        self.process = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.killed = False
        self.watcher = threading.Thread(target=self._watch, args=(when, delay), daemon=True)
        self.watcher.start()

    def _watch(self, when, delay: float) -> None:
        while when is not None and self.process.poll() is None:
            if when(self.process.pid):
                time.sleep(delay)
                self.kill()
                return
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.killed = True
            os.kill(self.process.pid, signal.SIGKILL)

    def result(self, timeout: float = 300.0) -> tuple[int, str]:
        try:
            _, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.process.args} did not end (seed {SEED})") from None
        self.watcher.join()
        return self.process.returncode, stderr


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith("leffa: error:")]
    assert errors, stderr
    return " ".join(lines[lines.index(errors[0]) :])  # rich may wrap the one message over several lines


def assert_run_folder_sound(output: Path) -> list[Path]:
    """Every visible checkpoint is complete, ``latest`` names one of them, the lock is free, weights load."""
    from leffa.checkpoint import load_model

    root = checkpoints.checkpoint_root(output)
    steps = sorted(root.glob("step-*")) if root.is_dir() else []
    for folder in steps:
        assert checkpoints.checkpoint_problem(folder, 0) is None, f"{folder} incomplete (seed {SEED})"
    if (root / "latest").exists():
        assert (root / (root / "latest").read_text().strip()) in steps, f"latest dangles (seed {SEED})"
    with FolderLock(output / checkpoints.LOCK_FILE, str(output)):
        pass  # the killed holder's lock went with it
    for weights in output.glob("model*.safetensors"):
        load_model(weights)
    return steps


# -- all the processes killed below, started at once -----------------------------------------------------------------

RACE_STEPS = 4
KILLED_EXPORT = """
import os, shutil, signal, sys, torch
from leffa.export import graphs
from leffa.model import LeffaModel
base, directory, point = sys.argv[1], sys.argv[2], int(sys.argv[3])
names, options = ("vae_encoder", "vae_decoder"), graphs.ExportOptions(height=64, width=48)
torch.manual_seed(0)
graphs.export_onnx(LeffaModel.from_base_folder(base), directory, options, names)  # the complete fp32 export
shutil.copytree(directory, directory + ".before")
real, done = graphs.export_graph, []
def export_graph(spec, path, opset):
    info = real(spec, path, opset)
    done.append(path)
    if len(done) == point:
        os.kill(os.getpid(), signal.SIGKILL)
    return info
graphs.export_graph = export_graph
options.dtype = "fp16"
graphs.export_onnx(LeffaModel.from_base_folder(base), directory, options, names)  # killed midway
"""


@pytest.fixture(scope="module", autouse=True)
def victims(vitonhd, tmp_path_factory, rng) -> dict:
    """Start: two trainings racing for one folder (the winner killed at a random time once it checkpoints), an
    fp16 re-export over an fp32 export killed after a random graph, and a try-on batch killed at a random time."""
    root = tmp_path_factory.mktemp("victims")
    run = root / "run"
    train_args = [*LEFFA, *TRAIN_ARGS, "--data", str(vitonhd), "--output", str(run), "--max-steps", str(RACE_STEPS)]

    def checkpointed(pid: int) -> bool:  # the run holding the folder has started checkpointing
        try:
            holder = int((run / checkpoints.LOCK_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return False
        return holder == pid and any(checkpoints.checkpoint_root(run).glob("*step-*"))

    delay = rng.uniform(0.0, 2.5)  # somewhere in the steps, checkpoint writes, pruning or the final save
    batch_out = root / "batch"
    batch_args = [
        "tryon",
        "--batch",
        str(vitonhd / "test"),
        "--pairs",
        str(vitonhd / "test_pairs.txt"),
        "-o",
        str(batch_out),
        "--model",
        "synth-tiny",
        "--steps",
        "8",
        "--device",
        "cpu",
    ]

    def started(pid: int) -> bool:
        return batch_out.is_dir() and any(batch_out.iterdir())

    export_point = rng.randrange(1, 3)  # after the first graph, or after the last one before the swap
    found = {
        "run": run,
        "racers": [Victim(train_args, checkpointed, delay) for _ in range(2)],
        "export_dir": root / "export" / "onnx",
        "export": Victim(
            [sys.executable, "-c", KILLED_EXPORT, str(TINY_BASE), str(root / "export" / "onnx"), str(export_point)]
        ),
        "batch_out": batch_out,
        "batch_args": batch_args,
        "batch": Victim([*LEFFA, *batch_args], started, rng.uniform(0.0, 0.5)),
    }
    yield found
    for victim in (*found["racers"], found["export"], found["batch"]):
        victim.kill()


def test_racing_runs_then_a_random_kill_lose_nothing(victims, vitonhd):
    from leffa.train.loop import train

    output = victims["run"]
    outcomes = [victim.result() for victim in victims["racers"]]
    losers = [index for index, (code, _) in enumerate(outcomes) if code > 0]
    assert len(losers) == 1, f"{outcomes} (seed {SEED})"  # exactly one refused; the other finished or was killed
    winner = victims["racers"][1 - losers[0]].process
    message = one_line_error(outcomes[losers[0]][1])
    assert f"in use by another process (pid {winner.pid})" in message or "already holds a training run" in message
    steps = assert_run_folder_sound(output)

    result = train(tiny_config(vitonhd, output, max_steps=RACE_STEPS, resume="latest"))
    assert result.resumed_from == (steps[-1] if steps else None), f"seed {SEED}"
    assert result.steps == RACE_STEPS and (output / "model.safetensors").is_file()
    assert [p.name for p in assert_run_folder_sound(output)] == [f"step-{s:08d}" for s in range(2, RACE_STEPS + 1)]


# -- training: used folders, overwrite, pruning per run ----------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(vitonhd, tmp_path_factory) -> Path:
    from leffa.train.loop import train

    output = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(vitonhd, output, max_steps=3))
    return output


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_a_used_folder_is_refused_and_overwrite_starts_a_clean_numbering(finished_run, vitonhd, tmp_path):
    from leffa.train.loop import train

    output = copy_run(finished_run, tmp_path)
    before = (output / "model.safetensors").read_bytes()
    with pytest.raises(LeffaError, match="already holds a training run .*--resume latest.*--overwrite"):
        train(tiny_config(vitonhd, output, max_steps=1))
    assert (output / "model.safetensors").read_bytes() == before  # refused before anything was written
    with pytest.raises(LeffaError, match="choose one"):
        train(tiny_config(vitonhd, output, max_steps=1, resume="latest"), overwrite=True)
    result = train(tiny_config(vitonhd, output, max_steps=1), overwrite=True)
    root = checkpoints.checkpoint_root(output)
    assert result.resumed_from is None and result.steps == 1
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000001"]  # the old run's 2, 3 are gone
    assert (root / "latest").read_text().strip() == "step-00000001"
    assert_run_folder_sound(output)


def test_pruning_keeps_other_runs_and_latest(finished_run, tmp_path):
    output = copy_run(finished_run, tmp_path)
    root = checkpoints.checkpoint_root(output)
    ours = checkpoints.read_manifest(root / "step-00000003")["run"]
    foreign = root / "step-00000009"  # e.g. copied in from another run: higher number, other run id
    shutil.copytree(root / "step-00000001", foreign)
    manifest = checkpoints.read_manifest(foreign)
    (foreign / "manifest.json").write_text(json.dumps({**manifest, "run": "another"}))
    removed = checkpoints.prune(root, ours, keep=1, protect=root / "step-00000003")
    assert sorted(p.name for p in removed) == ["step-00000001", "step-00000002"]
    assert sorted(p.name for p in root.glob("step-*")) == ["step-00000003", "step-00000009"]
    assert not list(root.glob(".*"))  # no half-deleted leftovers


# -- training: damaged checkpoints ---------------------------------------------------------------------------------


def flip_bit(path: Path, rng) -> None:
    data = bytearray(path.read_bytes())
    index = rng.randrange(len(data))
    data[index] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def reseal(folder: Path) -> None:
    """Rewrite the manifest so that the damage below is only found by reading the files, not by their hashes."""
    manifest = checkpoints.read_manifest(folder)
    checkpoints.write_manifest(folder, manifest["step"], manifest["run"], manifest["processes"])


def test_damaged_checkpoints_fall_back_with_a_note_or_refuse(finished_run, vitonhd, tmp_path, rng):
    output = copy_run(finished_run, tmp_path)
    root = checkpoints.checkpoint_root(output)
    flip_bit(root / "step-00000003" / rng.choice(["model.safetensors", "optimizer.bin", "trainer_state.json"]), rng)
    with open(root / "step-00000002" / "optimizer.bin", "r+b") as handle:
        handle.truncate(100)
    point = checkpoints.find_resume_point(output, "latest")
    assert point.folder.name == "step-00000001" and point.step == 1
    assert "SHA-256" in point.notes[0] and "step-00000003" in point.notes[0]
    assert "truncated" in point.notes[1] and "step-00000002" in point.notes[1]
    with pytest.raises(LeffaError, match="incomplete checkpoint"):
        checkpoints.find_resume_point(output, str(root / "step-00000003"))

    # an RNG state that cannot be unpickled is incomplete too, even when its hash matches the manifest
    (root / "step-00000001" / "random_states_0.pkl").write_bytes(b"not a pickle")
    reseal(root / "step-00000001")
    assert "random_states_0.pkl is unreadable" in checkpoints.checkpoint_problem(root / "step-00000001", 0)
    with pytest.raises(LeffaError, match="no complete checkpoint to resume"):
        checkpoints.find_resume_point(output, "latest")
    (root / "step-00000001" / "random_states_0.pkl").unlink()
    reseal(root / "step-00000001")
    assert "random_states_0.pkl (the RNG state) is missing" in checkpoints.checkpoint_problem(root / "step-00000001")
    # a manifest that never got written (killed before it) marks the save unfinished
    (root / "step-00000001" / "manifest.json").unlink()
    assert "no valid manifest.json" in checkpoints.checkpoint_problem(root / "step-00000001")


def test_resume_falls_back_to_the_newest_complete_checkpoint(finished_run, vitonhd, tmp_path, rng, capsys):
    from leffa.train.loop import Trainer

    output = copy_run(finished_run, tmp_path)
    root = checkpoints.checkpoint_root(output)
    flip_bit(root / "step-00000003" / "random_states_0.pkl", rng)
    (root / "step-00000002" / "leffa_config.json").write_text("{broken")
    reseal(root / "step-00000002")  # complete by its manifest, but its model config is unreadable
    trainer = Trainer(tiny_config(vitonhd, output, max_steps=3, resume=str(root / "step-00000001")))
    trainer.close()
    assert trainer.step == 1
    with pytest.raises(LeffaError, match=r"leffa_config.json: the embedded model config is not valid JSON"):
        Trainer(tiny_config(vitonhd, output, max_steps=3, resume="latest"))
    shutil.rmtree(root / "step-00000002")
    code, err = run_cli(
        [*TRAIN_ARGS, "--data", vitonhd, "--output", output, "--max-steps", "3", "--resume", "latest"], capsys
    )
    assert code in (0, None), err
    assert "leffa: note: " in err and "step-00000003: incomplete checkpoint, skipped (random_states_0.pkl" in err
    assert f"resumed from step 1 ({root / 'step-00000001'})" in err and "trained 3 steps" in err
    assert [p.name for p in assert_run_folder_sound(output)] == ["step-00000001", "step-00000002", "step-00000003"]


# -- export ----------------------------------------------------------------------------------------------------------

EXPORT_GRAPHS = ("vae_encoder", "vae_decoder")


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory) -> Path:
    from leffa.export.graphs import ExportOptions, export_onnx
    from leffa.model import LeffaModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("export") / "onnx"
    export_onnx(LeffaModel.from_base_folder(TINY_BASE), directory, ExportOptions(height=64, width=48), EXPORT_GRAPHS)
    return directory


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_killed_re_export_leaves_the_old_complete_folder(victims):
    from leffa.export.backend import OnnxLeffaModel
    from leffa.export.graphs import ExportOptions, export_onnx
    from leffa.model import LeffaModel

    code, stderr = victims["export"].result()
    assert code == -signal.SIGKILL, stderr
    directory = victims["export_dir"]
    before = Path(str(directory) + ".before")
    assert snapshot(directory) == snapshot(before), f"seed {SEED}"
    assert OnnxLeffaModel(directory).manifest["dtype"] == "fp32"
    # the next export clears the killed one's hidden leftovers and swaps in a complete folder
    shutil.rmtree(before)
    export_onnx(
        LeffaModel.from_base_folder(TINY_BASE),
        directory,
        ExportOptions(dtype="fp16", height=64, width=48),
        EXPORT_GRAPHS,
    )
    assert OnnxLeffaModel(directory).manifest["dtype"] == "fp16"
    assert sorted(p.name for p in directory.parent.iterdir()) == [".onnx.lock", "onnx"]


def test_the_backend_refuses_damaged_or_mixed_export_folders(fp32_export, tmp_path, rng):
    from leffa.export.backend import OnnxLeffaModel
    from leffa.export.graphs import ExportOptions, export_onnx
    from leffa.model import LeffaModel

    damaged = tmp_path / "damaged"
    shutil.copytree(fp32_export, damaged)
    flip_bit(damaged / "vae_decoder.onnx", rng)
    with pytest.raises(LeffaError, match="vae_decoder.onnx does not match its SHA-256.*export the model again"):
        OnnxLeffaModel(damaged)
    shutil.copy(fp32_export / "vae_decoder.onnx", damaged / "vae_decoder.onnx")
    with open(damaged / "vae_encoder.onnx", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(LeffaError, match="vae_encoder.onnx is 1000 bytes, the manifest says"):
        OnnxLeffaModel(damaged)

    torch.manual_seed(5)
    other = tmp_path / "other"
    export_onnx(LeffaModel.from_base_folder(TINY_BASE), other, ExportOptions(height=64, width=48), ("vae_decoder",))
    mixed = tmp_path / "mixed"  # a graph of another export beside this export's graphs and manifest
    shutil.copytree(fp32_export, mixed)
    shutil.copy(other / "vae_decoder.onnx", mixed / "vae_decoder.onnx")
    with pytest.raises(LeffaError, match="vae_decoder.onnx does not match its SHA-256"):
        OnnxLeffaModel(mixed)
    # without hashes, dtypes and shapes are still checked: a manifest promising fp16 does not fit an fp32 graph
    manifest = json.loads((fp32_export / "manifest.json").read_text())
    manifest["graphs"]["vae_decoder"]["inputs"][0]["dtype"] = "float16"
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(fp32_export / "vae_encoder.onnx", damaged / "vae_encoder.onnx")
    with pytest.raises(LeffaError, match="vae_decoder.onnx: input latent is float32 .*, the manifest says float16"):
        OnnxLeffaModel(damaged, verify=False)


def test_export_refuses_a_folder_holding_other_files(tmp_path):
    from leffa.export.graphs import check_export_destination

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LeffaError, match="holds files that are not an export \\(notes.txt\\)"):
        check_export_destination(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- batch -----------------------------------------------------------------------------------------------------------


def test_a_killed_batch_keeps_complete_outputs_and_a_rerun_finishes(victims, capsys):
    from leffa_cli.app import main

    code, stderr = victims["batch"].result()
    assert code == -signal.SIGKILL or code == 0, stderr
    out = victims["batch_out"]
    written = {}
    for path in sorted(out.iterdir()) if out.is_dir() else []:
        if path.name.startswith("."):
            continue  # an unfinished atomic write: hidden, never taken for an output
        with Image.open(path) as image:
            image.load()  # complete, not truncated
        written[path.name] = path.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(victims["batch_args"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    outputs = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert len(outputs) == 6, f"seed {SEED}"
    assert all((out / name).read_bytes() == data for name, data in written.items())  # kept, not redone


# -- unwritable destinations ----------------------------------------------------------------------------------------


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only by patching the file-creation calls (these tests run as root, who ignores 0555).

    Returns a set: every folder added to it refuses new entries as a 0555 folder does for a normal user.
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
    for kind, target in (
        ("file", frozen / "deep" / "x.json"),
        ("folder", frozen / "run"),
        ("folder", frozen),
        ("whole-folder", frozen / "export"),
    ):
        with pytest.raises(LeffaError, match=r"cannot write in .*frozen \(permission denied\)"):
            ensure_writable_destination(target, kind)
    assert ensure_writable_destination(tmp_path / "new" / "deeper", "folder") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "frozen"]


def run_cli(args, capsys):
    from leffa_cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, err


def test_commands_check_destinations_before_loading(tmp_path, vitonhd, read_only, capsys):
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    read_only.add(frozen)
    (tmp_path / "a-file").write_text("x")
    missing = tmp_path / "missing.safetensors"  # loading it would fail with another message: the check came first
    cases = [
        (["export", "--onnx", frozen / "onnx", "--model", missing], "--onnx .*cannot write in .*frozen"),
        (["export", "--onnx", tmp_path / "a-file" / "onnx", "--model", missing], "a-file is a file, not a folder"),
        (["export", "--safetensors", missing, "--base", TINY_BASE, "-o", frozen / "x.safetensors"], "cannot write"),
        (["eval", "--pred", vitonhd, "--gt", vitonhd, "-o", tmp_path / "a-file" / "r.json"], "-o .*is a file, not a"),
        (["eval", "--run", "--model", missing, "--data", vitonhd, "--out-dir", frozen / "e"], "--out-dir .*cannot"),
        ([*TRAIN_ARGS, "--data", vitonhd, "--output", frozen / "run"], "--output .*cannot write in"),
        ([*TRAIN_ARGS, "--data", vitonhd, "--output", tmp_path / "a-file"], "is a file, not a folder"),
    ]
    for args, expected in cases:
        code, err = run_cli(args, capsys)
        assert code == 2, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
        assert re.search(expected, " ".join(err.split())), (args, err)


def runs_as_nobody(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "pass"], user="nobody", capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a check as another user")
def test_a_0555_folder_refuses_a_normal_user(tmp_path):
    """A real read-only folder, as the unprivileged user ``nobody`` sees it (root ignores permission bits)."""
    shared = Path(tempfile.mkdtemp(prefix="leffa-faults-", dir="/tmp"))
    try:
        os.chmod(shared, 0o755)
        (shared / "ro").mkdir(mode=0o555)
        os.chmod(shared / "ro", 0o555)
        code = (
            "from leffa.atomic import ensure_writable_destination as check\n"
            "from leffa.errors import LeffaError\n"
            "try:\n    check(%r, 'folder', '--output')\nexcept LeffaError as e:\n    print(e)\n"
        )
        # leffa.atomic needs only the standard library, so any Python 3 that nobody may run will do
        python = next(
            (p for p in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3") if runs_as_nobody(p)), None
        )
        if python is None:
            pytest.skip("no Python interpreter that the user nobody may run")
        result = subprocess.run(
            [python, "-c", code % str(shared / "ro" / "run")],
            user="nobody",
            env={"PYTHONPATH": str(ROOT), "HOME": str(shared)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if "No module named" in result.stderr or "Permission denied: '" in result.stderr:
            pytest.skip(f"nobody cannot read the checkout here ({result.stderr.strip().splitlines()[-1]})")
        assert result.stdout.strip().endswith("ro (permission denied)"), result.stdout + result.stderr
        assert not list((shared / "ro").iterdir())
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# -- garbage with exit 0 ---------------------------------------------------------------------------------------------


def test_options_generators_cannot_take_are_refused():
    from leffa.sampler import SamplerOptions, check_seed
    from leffa.train.config import load_config

    for options, message in (
        (dict(guidance=float("nan")), "guidance: nan is not a finite number"),
        (dict(guidance=float("inf")), "guidance: inf is not a finite number"),
        (dict(eta=float("nan")), "eta"),
        (dict(eta=3.0), "eta: 3.0 is out of range"),
        (dict(steps=2.5), "steps: 2.5 is not a whole number"),
    ):
        with pytest.raises(LeffaError, match=message):
            SamplerOptions(**options).check()
    for seed in (-1, 2**64, 1.5):
        with pytest.raises(LeffaError, match="seed: .* out of range"):
            check_seed(seed)
    assert check_seed(2**64 - 1) == 2**64 - 1
    for setting, value in (
        ("lr", float("nan")),
        ("leffa_weight", float("inf")),
        ("seed", 2**32),
        ("ema_decay", 2.0),
        ("keep_checkpoints", 0),
    ):
        with pytest.raises(LeffaError, match=f"training setting .*{setting}"):
            load_config(**{setting: value})


def test_the_sampler_refuses_nan_results_naming_the_cause(tiny_model):
    from leffa.sampler import SamplerOptions, check_finite, sample

    with torch.no_grad():
        tiny_model.generative_unet.conv_out.bias.fill_(float("nan"))
    person = torch.zeros(1, 3, 64, 48)
    mask = torch.ones(1, 1, 64, 48)
    with pytest.raises(LeffaError, match="NaN/Inf .*weights are probably broken.*nothing was written"):
        sample(tiny_model, person, person, mask, person, SamplerOptions(steps=2))
    with pytest.raises(LeffaError, match="float16 probably overflowed \\(try --dtype fp32\\)"):
        check_finite(torch.tensor([1.0, float("inf")]), "decoded images", torch.float16)


def test_broken_checkpoints_are_one_line_errors(tmp_path, tiny_model):
    from leffa.checkpoint import FORMAT, load_model, save_model

    tensors = {key: value.contiguous() for key, value in tiny_model.state_dict().items()}
    for text in ("{not json", '{"unet": 1}', json.dumps({**json.loads(tiny_model.config.to_json()), "x": 1})):
        path = tmp_path / "broken-config.safetensors"
        save_file(tensors, str(path), metadata={"format": FORMAT, "leffa_config": text})
        with pytest.raises(LeffaError, match="broken-config.safetensors: the embedded model config"):
            load_model(path)
    with torch.no_grad():
        tiny_model.vae.decoder.conv_out.weight[0, 0, 0, 0] = float("inf")
    save_model(tiny_model, tmp_path / "diverged.safetensors", dtype="fp32")
    assert not torch.isfinite(load_file(str(tmp_path / "diverged.safetensors"))["vae.decoder.conv_out.weight"]).all()
    with pytest.raises(LeffaError, match="weight vae.decoder.conv_out.weight holds NaN/Inf values"):
        load_model(tmp_path / "diverged.safetensors")
