"""One model, many requests: a single worker thread behind a bounded queue.

Why one thread: a pipeline holds one placed model whose attention processors keep per-call state, and one image
already uses every core (or the GPU), so concurrent calls would only contend. Why bounded: a request that cannot
start soon is better refused at once (HTTP 503 with ``Retry-After``) than left hanging until the client times out.
``limit`` counts the request being generated plus those waiting.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """The queue holds ``limit`` requests; ``retry_after`` (seconds) estimates when one will have finished."""

    def __init__(self, limit: int, retry_after: int):
        super().__init__(f"the queue is full ({limit} requests); retry in {retry_after} s")
        self.limit = limit
        self.retry_after = retry_after


class Worker:
    """Runs submitted calls one at a time, in submission order, refusing new ones while ``limit`` are pending."""

    def __init__(self, limit: int = 8):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leffa-worker")
        self._lock = threading.Lock()
        self._pending = 0
        self._done = 0
        self._busy_seconds = 0.0  # summed run time of finished calls, for Retry-After

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def done(self) -> int:
        return self._done

    def mean_seconds(self) -> float:
        """Mean run time of a call so far (1 s before the first has finished)."""
        return self._busy_seconds / self._done if self._done else 1.0

    def submit(self, call: Callable[[], T]) -> Future:
        """Queue ``call``; raises ``QueueFull`` at once when ``limit`` calls are pending."""
        with self._lock:
            if self._pending >= self.limit:
                raise QueueFull(self.limit, max(1, math.ceil(self._pending * self.mean_seconds())))
            self._pending += 1
        return self._executor.submit(self._run, call)

    def _run(self, call: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return call()
        finally:
            with self._lock:
                self._pending -= 1
                self._done += 1
                self._busy_seconds += time.perf_counter() - start

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
