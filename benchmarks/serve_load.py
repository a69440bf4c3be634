"""Throughput and latency of ``leffa serve`` under load: requests/s and seconds per image with 1 and N clients.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --model synth-tiny --clients 1 4 --requests 12 --steps 30

Serves ``leffa.app.server.create_app`` on loopback (uvicorn in a thread, exactly as ``leffa serve`` does) and posts
``examples/`` (person, garment, mask, DensePose: no automatic conditions) from each client in a loop. The server
generates one image at a time (one worker thread), so more clients raise the latency each sees (queueing) while
throughput stays near one worker's rate; the point of the measurement is that the queue and HTTP add little. Also
times ``pipe(...)`` called directly, side by side, for the HTTP overhead ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leffa.app.server import Limits, create_app  # noqa: E402
from leffa.pipelines import TryOnPipeline  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synth-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--requests", type=int, default=12, help="Requests per client count, in all.")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = TryOnPipeline.from_pretrained(args.model, device=args.device, offline=True)
    files = {
        role: (name, (EXAMPLES / name).read_bytes())
        for role, name in (
            ("person", "person.jpg"),
            ("garment", "garment.jpg"),
            ("mask", "mask.png"),
            ("densepose", "densepose.jpg"),
        )
    }
    inputs = [EXAMPLES / name for name in ("person.jpg", "garment.jpg", "mask.png", "densepose.jpg")]

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(pipe, limits=Limits(queue=max(args.clients))), host="127.0.0.1", port=0, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    def post(seed: int) -> float:
        start = time.perf_counter()
        answer = httpx.post(f"{url}/tryon", files=files, data={"steps": args.steps, "seed": seed}, timeout=600)
        answer.raise_for_status()
        return time.perf_counter() - start

    post(0)  # warm-up (first-call allocations)
    start = time.perf_counter()
    for seed in range(3):
        pipe(*inputs[:2], mask=inputs[2], densepose=inputs[3], steps=args.steps, seed=seed)
    direct = (time.perf_counter() - start) / 3

    print(
        f"model {pipe.source} at {pipe.size[0]}x{pipe.size[1]}, {args.device}, {args.steps} steps, "
        f"{args.threads} torch thread(s); pipe(...) directly: {direct:.3f} s/image"
    )
    print(f"{'clients':>7} {'requests':>8} {'req/s':>7} {'latency mean':>12} {'p95':>7} {'vs direct':>9}")
    for clients in args.clients:
        count = max(args.requests, clients)
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(post, range(count)))
        elapsed = time.perf_counter() - start
        p95 = sorted(latencies)[max(0, round(0.95 * len(latencies)) - 1)]
        mean = statistics.fmean(latencies)
        print(f"{clients:>7} {count:>8} {count / elapsed:>7.2f} {mean:>10.3f} s {p95:>5.3f} s {mean / direct:>8.2f}x")
    server.should_exit = True
    thread.join(timeout=30)


if __name__ == "__main__":
    main()
