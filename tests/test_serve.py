"""``leffa serve``'s app on a real loopback socket (uvicorn in a thread) with ``synth-tiny``: parallel clients, a
full queue answered 503 at once, and 4xx one-line errors (never 500) for bad requests."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from extras import need
from PIL import Image

need("fastapi", "uvicorn", "multipart", "httpx")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from leffa.app.server import Limits, create_app  # noqa: E402
from leffa.errors import LeffaError  # noqa: E402
from leffa.pipelines import PosePipeline, TryOnPipeline  # noqa: E402

EXAMPLES = Path(__file__).parent.parent / "examples"
STEPS = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pipe():
    return TryOnPipeline.from_pretrained("synth-tiny", device="cpu", dtype="fp32", offline=True)


class Served:
    """An app on 127.0.0.1 at a free port, served by uvicorn in a thread."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _files(**overrides):
    names = {"person": "person.jpg", "garment": "garment.jpg", "mask": "mask.png", "densepose": "densepose.jpg"}
    files = {role: (name, (EXAMPLES / name).read_bytes()) for role, name in names.items()}
    files.update(overrides)
    return {role: value for role, value in files.items() if value is not None}


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_parallel_clients_all_get_valid_pngs_equal_to_the_api(pipe):
    pose = PosePipeline(pipe.model, pipe.size, pipe.source, offline=True)
    clients = 4
    with Served(create_app(pipe, pose, Limits(queue=clients))) as served:
        health = httpx.get(f"{served.url}/health").json()
        assert health["status"] == "ok" and health["device"] == "cpu" and health["dtype"] == "float32"
        assert health["model"] == pipe.source and health["size"] == list(pipe.size)
        assert httpx.get(f"{served.url}/openapi.json").json()["paths"].keys() >= {"/tryon", "/pose", "/health"}
        assert httpx.get(f"{served.url}/docs").status_code == 200

        def post(seed):
            return httpx.post(
                f"{served.url}/tryon",
                files=_files(),
                timeout=120,
                data={"steps": STEPS, "seed": seed, "repaint": "true", "mask_grow": 2},
            )

        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(post, range(clients)))
        assert [a.status_code for a in answers] == [200] * clients
        assert all(a.headers["content-type"] == "image/png" for a in answers)
        images = [_png(a.content) for a in answers]
        person = Image.open(EXAMPLES / "person.jpg")
        assert all(image.size == person.size and image.mode == "RGB" for image in images)
        direct = pipe(
            EXAMPLES / "person.jpg",
            EXAMPLES / "garment.jpg",
            EXAMPLES / "mask.png",
            EXAMPLES / "densepose.jpg",
            steps=STEPS,
            seed=3,
            repaint=True,
            mask_grow=2,
        ).images[0]
        assert np.array_equal(np.asarray(images[3]), np.asarray(direct))  # the server is the API, same pixels
        assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))  # seeds differ

        answer = httpx.post(
            f"{served.url}/pose",
            timeout=120,
            data={"steps": STEPS},
            files={
                "person": ("person.jpg", (EXAMPLES / "person.jpg").read_bytes()),
                "target": ("garment.jpg", (EXAMPLES / "garment.jpg").read_bytes()),
                "densepose": ("densepose.jpg", (EXAMPLES / "densepose.jpg").read_bytes()),
            },
        )
        assert answer.status_code == 200, answer.text
        assert _png(answer.content).size == Image.open(EXAMPLES / "garment.jpg").size
        assert httpx.get(f"{served.url}/health").json()["queue"]["done"] == clients + 1


class GatedPipe:
    """A try-on pipeline whose generation waits for ``gate``: requests stay in the queue as long as the test wants."""

    def __init__(self, pipe):
        self.pipe, self.gate = pipe, threading.Event()
        self.model, self.size, self.source = pipe.model, pipe.size, pipe.source

    def prepare(self, *args, **kwargs):
        return self.pipe.prepare(*args, **kwargs)

    def generate(self, *args, **kwargs):
        assert self.gate.wait(60)
        return self.pipe.generate(*args, **kwargs)


def test_a_full_queue_answers_503_with_retry_after_at_once(pipe):
    gated = GatedPipe(pipe)
    with Served(create_app(gated, limits=Limits(queue=2))) as served:

        def post():
            return httpx.post(f"{served.url}/tryon", files=_files(), data={"steps": STEPS}, timeout=120)

        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(post) for _ in range(2)]
            deadline = time.monotonic() + 30
            while httpx.get(f"{served.url}/health").json()["queue"]["pending"] < 2:
                assert time.monotonic() < deadline, "the two requests never reached the queue"
                time.sleep(0.05)
            start = time.monotonic()
            refused = httpx.post(f"{served.url}/tryon", files=_files(), data={"steps": STEPS}, timeout=10)
            assert time.monotonic() - start < 5  # refused at once, not after the queue drains
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert "queue is full" in refused.json()["error"]
            assert httpx.get(f"{served.url}/pose", timeout=10).status_code == 405  # GET on a POST route
            assert httpx.post(f"{served.url}/pose", files=_files(), timeout=10).status_code in (404, 422)
            gated.gate.set()
            answers = [future.result(timeout=120) for future in waiting]
        assert [a.status_code for a in answers] == [200, 200]
        assert all(_png(a.content).size == (192, 256) for a in answers)


def test_bad_requests_get_4xx_with_the_clis_one_line_message(pipe, tmp_path, monkeypatch):
    from leffa.pipeline import load_rgb

    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("not an image")
    with pytest.raises(LeffaError) as cli_error:  # what `leffa tryon notes.txt ...` reads it as
        load_rgb("notes.txt", "person photo", [])
    big = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(big, format="PNG")
    small_mask = io.BytesIO()
    Image.new("L", (20, 20)).save(small_mask, format="PNG")
    limits = Limits(upload_bytes=200_000, pixels=4_000_000, steps=50, queue=2)
    cases = {
        "not an image": ({"person": ("notes.txt", b"not an image")}, {}, 400, cli_error.value.message),
        "empty file": ({"garment": ("g.jpg", b"")}, {}, 400, "g.jpg: garment image is empty (0 bytes)"),
        "mask size": ({"mask": ("m.png", small_mask.getvalue())}, {}, 400, "they must be the same size"),
        "garment type": ({}, {"garment_type": "hat"}, 400, "garment_type 'hat'"),
        "zero steps": ({}, {"steps": 0}, 400, "steps"),
        "negative seed": ({}, {"seed": -1}, 400, "seed: -1 is out of range"),
        "many steps": ({}, {"steps": 500}, 400, "steps 500: at most 50 on this server"),
        "steps not a number": ({}, {"steps": "many"}, 422, "steps:"),
        "negative grow": ({}, {"mask_grow": -3}, 400, "mask_grow -3"),
        "length of a top": ({}, {"garment_length": 0.5}, 400, "garment_length 0.5: applies to lower_body"),
        "no garment": ({"garment": None}, {}, 422, "garment:"),
        "too many pixels": ({"person": ("big.png", big.getvalue())}, {}, 413, "big.png: person photo is 3000x2000"),
        "too many bytes": ({"person": ("huge.jpg", b"\xff" * 300_000)}, {}, 413, "larger than"),
        "body too large": ({"person": ("huge.jpg", b"\xff" * 2_000_000)}, {}, 413, "request body is larger"),
    }
    with Served(create_app(pipe, limits=limits)) as served:
        for name, (files, data, status, message) in cases.items():
            answer = httpx.post(f"{served.url}/tryon", files=_files(**files), data={"steps": STEPS, **data}, timeout=60)
            assert answer.status_code == status, (name, answer.status_code, answer.text)
            error = answer.json()["error"]
            assert message in error and "\n" not in error, (name, error)
        answer = httpx.post(f"{served.url}/pose", files=_files(target=("t.jpg", b"x")), timeout=60)
        assert answer.status_code == 404 and "no pose model" in answer.json()["error"]
        assert httpx.get(f"{served.url}/health").json()["queue"]["pending"] == 0
