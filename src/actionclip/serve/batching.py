"""Batching across requests for ``actionclip serve``: uploads are decoded in a pool of worker processes while the
model runs in one thread, which takes the decoded videos of every request waiting (up to ``max_batch`` videos,
waiting at most ``max_wait_ms`` for more after the first) through the model together. The decoding processes exit
when the server does, however it ends (``kill -9`` included).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from actionclip.data.bad_samples import BadSample, PartlyRead
from actionclip.data.build import parse_views
from actionclip.inference.inputs import ranked, video_clips
from actionclip.inference.scoring import multiview_probabilities
from actionclip.models.inputs import model_image_size, model_normalization

THUMBNAIL_SIDE = 96
SERVER_CHECK_S = 0.5  # how often a decoding process looks for its server


@dataclass(frozen=True)
class Decoded:
    """A decoded upload: ``frames`` ``[T, 3, S, S]`` or ``[V, T, 3, S, S]`` uint8, or ``error``; ``warning`` for a
    video of which only a part could be read; ``thumbnails`` the first view's frames as JPEG data URIs."""

    frames: np.ndarray | None = None
    error: str | None = None
    warning: str | None = None
    thumbnails: tuple[str, ...] = ()


def _thumbnails(frames: torch.Tensor) -> tuple[str, ...]:
    first_view = frames if frames.ndim == 4 else frames[0]
    uris = []
    for frame in first_view:
        image = Image.fromarray(frame.permute(1, 2, 0).numpy())
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return tuple(uris)


def decode_upload(path: str, num_frames: int, size: int, views: str, thumbnails: bool, decode_short_side: int | None = None) -> Decoded:
    """The clips ``predict`` would score for ``path`` (run in a worker process)."""
    item = video_clips([path], num_frames, size, views, decode_short_side)[0]
    if isinstance(item, BadSample):
        return Decoded(error=item.reason)
    warning = None
    if isinstance(item, PartlyRead):
        item, warning = item.item, item.note.reason
    frames = item[0]
    # numpy, not a tensor: pickled by value, where a tensor would travel through a shared-memory file per video.
    return Decoded(frames.numpy(), warning=warning, thumbnails=_thumbnails(frames) if thumbnails else ())


def _init_worker(server: int) -> None:
    torch.set_num_threads(1)  # the workers together keep the cores busy, as DataLoader workers do
    # A server killed outright (kill -9, the OOM killer) cannot stop its decoders, which wait on a queue their
    # siblings keep open: each watches its server instead (not PR_SET_PDEATHSIG: it fires when the starting thread
    # ends, and the pool may start processes from a thread that ends before the server).
    threading.Thread(target=_exit_with, args=(server,), name="actionclip-watch-server", daemon=True).start()


def _exit_with(server: int) -> None:
    while os.getppid() == server:
        time.sleep(SERVER_CHECK_S)
    os._exit(0)


def _worker_ready() -> int:
    time.sleep(0.1)  # held a moment, so that each of the tasks submitted together starts its own process
    return os.getpid()


def decoding_pool(workers: int) -> Executor:
    """``workers`` processes (spawned: the server's threads and torch's thread pool must not be forked), or with 0 a
    thread of the server's own process."""
    if workers == 0:
        return ThreadPoolExecutor(1)
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))


class BatcherStopped(RuntimeError):
    """The model thread has stopped: no video can be scored until the server restarts."""


@dataclass
class _Job:
    frames: torch.Tensor
    text_features: torch.Tensor
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _resolve(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():  # cancelled: the client went away
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class Batcher:
    """Decodes uploads in ``pool`` and scores them in one model thread, across requests (see the module docstring)."""

    def __init__(
        self, model: nn.Module, workers: int, *, max_batch: int = 8, max_wait_ms: float = 20, decode_short_side: int | None = None
    ):
        self.model, self.workers = model, workers
        self.pool = decoding_pool(workers)
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.decode_short_side = decode_short_side
        self.num_frames = model.config.num_frames
        self.size = model_image_size(model)
        self.device = model.logit_scale.device
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pool_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="actionclip-serve-model", daemon=True)
        self.batches: list[int] = []  # videos per model batch, the most recent ones (the tests and /v1/health)
        self.failure: str | None = None  # why the model thread stopped, if it did (/v1/health reports it)

    def start(self) -> None:
        """Start the model thread, and the decoding processes now rather than on the first uploads."""
        self._thread.start()
        self._start_workers()

    def _start_workers(self) -> None:
        for ready in [self.pool.submit(_worker_ready) for _ in range(self.workers)]:
            ready.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.pool.shutdown(cancel_futures=True)

    async def classify(
        self, path: str, name: str, labels: Sequence[str], text_features: torch.Tensor, views: str, top_k: int, thumbnails: bool
    ) -> dict:
        """The result dict of one uploaded video (``predict --json``'s, ``video`` being ``name``)."""
        loop = asyncio.get_running_loop()
        self._check_running()
        try:
            decoded = await self._decode(path, views, thumbnails)
        except BrokenProcessPool:  # twice: this file itself crashes the decoder
            return {"video": name, "error": "the decoder crashed on this file"}
        if decoded.error is not None:
            return {"video": name, "error": decoded.error}
        future = loop.create_future()
        self._queue.put(_Job(torch.from_numpy(decoded.frames), text_features, future, loop))
        if self.failure is not None:  # the thread stopped since the check above: nobody will take the job
            self._fail_waiting()
        result = ranked(name, await future, labels, top_k)
        if decoded.warning:
            result["warning"] = decoded.warning
        if thumbnails:
            result["thumbnails"] = list(decoded.thumbnails)
        return result

    async def _decode(self, path: str, views: str, thumbnails: bool, retry: bool = True) -> Decoded:
        pool = self.pool
        try:
            return await asyncio.wrap_future(
                pool.submit(decode_upload, path, self.num_frames, self.size, views, thumbnails, self.decode_short_side)
            )
        except BrokenProcessPool:
            if not retry:
                raise
            # A worker died (a file that crashes FFmpeg, the OOM killer): a new pool serves this upload and the next.
            with self._pool_lock:
                if self.pool is pool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self.pool = decoding_pool(self.workers)
            return await self._decode(path, views, thumbnails, retry=False)

    def _next_batch(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(job)
        return batch

    def _check_running(self) -> None:
        if self.failure is not None:
            raise BatcherStopped(f"the batching thread has stopped: {self.failure}")

    def _fail_waiting(self) -> None:
        """Answer every job in the queue with ``BatcherStopped`` (their requests would wait for ever)."""
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._queue.get_nowait()
                if job is not None:
                    job.loop.call_soon_threadsafe(
                        _resolve, job.future, None, BatcherStopped(f"the batching thread has stopped: {self.failure}")
                    )

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                batch = [job for job in batch if not job.future.done()]
                if batch:
                    self.batches = (self.batches + [len(batch)])[-100:]
                    self._score(batch)
        except Exception as error:  # noqa: BLE001 - a bug: logged, reported by /v1/health and to every request
            logging.getLogger(__name__).exception("the batching thread has stopped")
            self.failure = f"{type(error).__name__}: {error}"
            self._fail_waiting()

    def _score(self, batch: list[_Job]) -> None:
        # Videos go through the model together when they share a label set and a number of views.
        groups: dict[tuple, list[_Job]] = {}
        for job in batch:
            groups.setdefault((id(job.text_features), job.frames.shape), []).append(job)
        for jobs in groups.values():
            try:
                with torch.inference_mode():
                    frames = torch.stack([job.frames for job in jobs]).to(self.device)
                    probabilities = multiview_probabilities(
                        self.model, frames, jobs[0].text_features, chunk=self.max_batch, normalization=model_normalization(self.model)
                    ).cpu()
                for job, row in zip(jobs, probabilities):
                    job.loop.call_soon_threadsafe(_resolve, job.future, row)
            except Exception as error:  # noqa: BLE001 - answered as a 500 to the requests concerned, the server lives on
                for job in jobs:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, error)


def check_views(views: str, max_views: int = 30) -> str:
    """``views`` if valid and at most ``max_views`` clips x crops (a bound on the memory one request takes)."""
    clips, crops = parse_views(views)
    if clips * crops > max_views:
        raise ValueError(f"views {views}: at most {max_views} views (clips x crops) per video")
    return views
