"""Model resolution: a fake hub on loopback through the real huggingface_hub download path, offline mode, disk."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch

from leffa.checkpoint import load_model, save_model
from leffa.errors import LeffaError
from leffa.model import LeffaModel
from leffa.weights import UPSTREAM_SIZE, resolve_model

# Not imported from conftest: importing it as a module would run its torch.set_num_threads(2) again.
PARITY = Path(__file__).parent / "fixtures" / "upstream_parity"
TINY_SD15 = PARITY / "stable-diffusion-inpainting"

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_repo(root: Path) -> Path:
    """A folder laid out like franciszzj/Leffa, holding the tiny upstream-format checkpoint."""
    repo = root / "franciszzj" / "Leffa"
    repo.mkdir(parents=True)
    shutil.copy(PARITY / "sd15_seed0.pth", repo / "virtual_tryon.pth")
    shutil.copytree(TINY_SD15, repo / "stable-diffusion-inpainting")
    return repo


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves ``/{owner}/{name}/resolve/{revision}/{path}`` the way the hub does for non-LFS files."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _resolve(self) -> Path | None:
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        path = self.server.root.joinpath(parts[0], parts[1], *parts[4:])
        return path if path.is_file() else None

    def _headers(self, path: Path | None) -> None:
        if path is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_HEAD(self):
        self.server.requests.append(("HEAD", self.path))
        self._headers(self._resolve())

    def do_GET(self):
        self.server.requests.append(("GET", self.path))
        path = self._resolve()
        self._headers(path)
        if path is not None:
            self.wfile.write(path.read_bytes())


@pytest.fixture
def hub(tmp_path):
    server = FakeHub(tmp_path / "hub")
    _fake_repo(server.root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _same_weights(a: LeffaModel, b: LeffaModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_downloads_upstream_model_from_hub_then_works_offline(hub, tmp_path):
    cache = tmp_path / "cache"
    resolved = resolve_model("viton_hd", task="vton", cache_dir=cache, endpoint=hub.url)
    expected = load_model(PARITY / "sd15_seed0.pth", base=TINY_SD15)
    assert _same_weights(resolved.model, expected)
    assert resolved.source == "franciszzj/Leffa/virtual_tryon.pth"
    assert resolved.image_size == UPSTREAM_SIZE
    downloaded = {path.split("/resolve/main/")[1] for method, path in hub.requests if method == "GET"}
    assert downloaded == {
        "virtual_tryon.pth",
        "stable-diffusion-inpainting/unet/config.json",
        "stable-diffusion-inpainting/vae/config.json",
        "stable-diffusion-inpainting/scheduler/scheduler_config.json",
    }
    assert list(cache.glob("models--franciszzj--Leffa/snapshots/*/virtual_tryon.pth"))

    hub.requests.clear()
    offline = resolve_model("viton_hd", task="vton", offline=True, cache_dir=cache, endpoint=hub.url)
    assert hub.requests == []
    assert _same_weights(offline.model, expected)


def test_half_precision_run_converts_the_upstream_pickle_once_and_caches_it(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("LEFFA_CONVERTED_CACHE", raising=False)
    cache = tmp_path / "cache"
    resolved = resolve_model("viton_hd", task="vton", cache_dir=cache, endpoint=hub.url, dtype=torch.float16)
    converted = list((tmp_path / "leffa-converted").glob("*/virtual_tryon.fp16.safetensors"))
    assert len(converted) == 1  # beside the hub cache, keyed by the pickle's content hash
    assert resolved.model.dtype == torch.float16
    expected = load_model(PARITY / "sd15_seed0.pth", base=TINY_SD15).to(torch.float16)
    assert _same_weights(resolved.model, expected)
    stamp = converted[0].stat().st_mtime_ns

    offline = resolve_model("viton_hd", task="vton", offline=True, cache_dir=cache, dtype=torch.float16)
    assert converted[0].stat().st_mtime_ns == stamp  # reused, not converted again
    assert _same_weights(offline.model, expected)
    full = resolve_model("viton_hd", task="vton", offline=True, cache_dir=cache, dtype=torch.float32)
    assert full.model.dtype == torch.float32  # an fp32 run reads the original pickle
    assert _same_weights(full.model, load_model(PARITY / "sd15_seed0.pth", base=TINY_SD15))


def test_offline_without_cache_names_the_files_to_place(tmp_path):
    with pytest.raises(LeffaError) as error:
        resolve_model("dress_code", task="vton", offline=True, cache_dir=tmp_path / "empty")
    message = str(error.value)
    assert "\n" not in message
    assert "--offline" in message
    assert "virtual_tryon_dc.pth" in message and "stable-diffusion-inpainting/unet/config.json" in message
    assert "--model FOLDER" in message


def test_unreachable_hub_is_one_clear_line(tmp_path, monkeypatch):
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)  # huggingface_hub retries 5 times
    closed = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    with pytest.raises(LeffaError, match="unreachable.*pose_transfer.pth"):
        resolve_model("pose_transfer", task="pose", cache_dir=tmp_path / "c", endpoint=f"http://127.0.0.1:{port}")


def test_hub_repo_id_with_upstream_layout(hub, tmp_path):
    resolved = resolve_model("franciszzj/Leffa", task="vton", cache_dir=tmp_path / "c", endpoint=hub.url)
    assert resolved.source == "franciszzj/Leffa/virtual_tryon.pth"


def test_hub_file_of_ours(hub, tmp_path):
    torch.manual_seed(1)
    model = LeffaModel.from_base_folder(TINY_SD15)
    model.config.extra["image_size"] = [64, 48]
    save_model(model, hub.root / "someone" / "tiny" / "weights" / "m.safetensors", dtype="fp32")
    resolved = resolve_model("someone/tiny/weights/m.safetensors", cache_dir=tmp_path / "c", endpoint=hub.url)
    assert _same_weights(resolved.model, model)
    assert resolved.image_size == (64, 48)


def test_local_folder_with_upstream_layout_and_pth_beside_base(tmp_path):
    repo = _fake_repo(tmp_path)
    expected = load_model(PARITY / "sd15_seed0.pth", base=TINY_SD15)
    assert _same_weights(resolve_model(str(repo), task="vton").model, expected)
    assert _same_weights(resolve_model(str(repo / "virtual_tryon.pth"), task="vton").model, expected)


def test_local_safetensors_and_folder_holding_one(tmp_path):
    model = LeffaModel.from_base_folder(TINY_SD15)
    path = save_model(model, tmp_path / "only" / "model.safetensors", dtype="fp32")
    assert _same_weights(resolve_model(str(path)).model, model)
    assert _same_weights(resolve_model(str(path.parent)).model, model)
    note = resolve_model(str(path), task="pose").notes
    assert note and "made for 'vton'" in note[0]


def test_resolution_errors_are_clear(tmp_path):
    with pytest.raises(LeffaError, match="not a known model"):
        resolve_model("nonsense")
    stray = tmp_path / "weights.pth"
    shutil.copy(PARITY / "sd15_seed0.pth", stray)
    with pytest.raises(LeffaError, match="base-model folder"):
        resolve_model(str(stray))
    with pytest.raises(LeffaError, match="does not match the model config"):
        resolve_model(str(stray), base=PARITY / "stable-diffusion-xl-1.0-inpainting-0.1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeffaError, match="no model found"):
        resolve_model(str(tmp_path / "empty"))


def test_synth_tiny_is_packaged_or_clearly_missing():
    import importlib.resources

    packaged = importlib.resources.files("leffa").joinpath("assets", "synth-tiny.safetensors").is_file()
    if packaged:
        assert resolve_model("synth-tiny").model is not None
    else:
        with pytest.raises(LeffaError, match="synth-tiny weights are not packaged in this install"):
            resolve_model("synth-tiny")
