"""One model, one generation thread, a bounded queue of waiting requests.

A model runtime holds one KV cache, so requests run one at a time on a dedicated thread (the event
loop stays free to accept, stream and reject). `ModelWorker.submit(fn)` queues `fn(job)`; `fn` calls
`job.emit(item)` for each result (token responses, a final dict, ...) and checks `job.cancelled`
between tokens, which the server sets when the client goes away or a stop string matched. A full
queue raises `QueueFull` with a Retry-After estimate from recent job durations.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from typing import Any, AsyncIterator, Callable

log = logging.getLogger("pocketlm.serve")

_DONE = object()


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class Job:
    """A queued call: results flow from the worker thread to the event loop through an asyncio queue."""

    def __init__(self, fn: Callable[["Job"], None], loop: asyncio.AbstractEventLoop):
        self.fn = fn
        self.loop = loop
        self.cancelled = threading.Event()
        self.finished = False
        self.watcher: asyncio.Task | None = None  # the disconnect watch (see `watch`)
        self._items: asyncio.Queue = asyncio.Queue()

    def emit(self, item: Any) -> None:
        """Hand one result to the waiting request (thread-safe; after the loop closed, dropped)."""
        try:
            self.loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # event loop closed during shutdown
            pass

    def cancel(self) -> None:
        self.cancelled.set()

    async def results(self) -> AsyncIterator[Any]:
        """The emitted items in order; re-raises an exception the job raised."""
        while True:
            item = await self._items.get()
            if item is _DONE:
                self.finished = True
                return
            if isinstance(item, BaseException):
                self.finished = True
                raise item
            yield item

    async def watch(self, is_disconnected: Callable[[], Any], every_s: float = 0.1) -> None:
        """Cancel the job when the client disconnects (run as a task beside the response)."""
        while not self.finished and not self.cancelled.is_set():
            if await is_disconnected():
                log.info("client disconnected; cancelling its generation")
                self.cancel()
                return
            await asyncio.sleep(every_s)


class ModelWorker:
    """Runs submitted jobs one at a time on its own thread; at most `queue_size` wait behind the running one."""

    def __init__(self, queue_size: int = 16):
        self.queue_size = queue_size
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = False
        self.stats = {"completed": 0, "cancelled": 0, "failed": 0, "rejected": 0}
        self._mean_s = 1.0  # running mean job duration, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="pocketlm-model", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Job], None]) -> Job:
        """Queue `fn` (call from the event loop); QueueFull when `queue_size` jobs already wait."""
        with self._lock:
            if self.waiting >= self.queue_size and (self.running or self.waiting):
                self.stats["rejected"] += 1
                # retry when half the queue has drained: the model never idles (the whole drain time would
                # leave it idle while every rejected client waits), and returning clients find room (one job's
                # time brought them all back at once to fight over one slot: at concurrency 32 and a queue
                # of 16, 8 of 200 requests lost 50 retries in a row, benchmarks/results/serve_load.txt)
                raise QueueFull(max(1, math.ceil(self._mean_s * (self.waiting + 1) / 2)))
            self.waiting += 1
        job = Job(fn, asyncio.get_running_loop())
        self._queue.put(job)
        return job

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self.waiting -= 1
                self.running = True
            t0 = time.perf_counter()
            outcome = "cancelled"
            try:
                if not job.cancelled.is_set():  # its client left while it waited
                    job.fn(job)
                    outcome = "cancelled" if job.cancelled.is_set() else "completed"
            except Exception as e:  # handed to the request, which answers with an error object
                outcome = "failed"
                job.emit(e)
            finally:
                dt = time.perf_counter() - t0
                with self._lock:
                    self.running = False
                    self.stats[outcome] += 1
                    if outcome == "completed":
                        self._mean_s = 0.8 * self._mean_s + 0.2 * dt
                job.emit(_DONE)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def status(self) -> dict:
        with self._lock:
            return {"running": self.running, "waiting": self.waiting, "queue_size": self.queue_size, **self.stats}
