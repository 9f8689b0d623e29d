# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Post-processing on background threads, so that the network never waits for the cells, tables and files of
the images (or sections) before.

Jobs run on a small thread pool in the order they were given. A *file* job (everything written for one input
file) has a name; its error comes back in the main thread naming that file, at the latest when :meth:`wait` is
called (the evaluator completing). Writes go through ``scripts.outputs.atomic_path``, so a failure or Ctrl-C leaves
no half-written result file.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .errors import BundleInputError
from .instances import SECTION_THREADS
from .settings import check_device, integer


def worker_count(workers: object, device: object = "cpu") -> int:
    """The ``postprocess_workers`` setting as a number of threads: 0 = post-process in the evaluator's thread,
    after the network (the serial path). "auto" = 0 where the network runs on the CPU: it keeps every core busy,
    and on a 2-core CPU one background thread made the 10-section job 1.01-1.05x slower (the network's OpenMP
    threads wait for the core it takes); :data:`scripts.instances.SECTION_THREADS` on a GPU, where the CPU would
    otherwise wait for the network and the network for the CPU."""
    if workers == "auto":
        return 0 if check_device(device).type == "cpu" else SECTION_THREADS
    return integer(workers, "postprocess_workers", 0, "auto")


class BackgroundJobs:
    """A thread pool for post-processing jobs, at most two files in flight.

    Args:
        workers: threads (at least 1). Jobs start in submission order, so a file job may wait for the section jobs
            submitted before it without ever blocking the pool.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._files: list[tuple[str, Future]] = []

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Start ``function(*args)`` on the pool; its result or error goes to the returned future."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="postprocess")
        return self._pool.submit(function, *args)

    def submit_file(self, name: str, function: Callable[..., Any], *args: Any) -> None:
        """Start the job that writes the results of file ``name``, after waiting for all file jobs but the latest
        (so at most two files' arrays are held); an error of one of those is raised here."""
        self._finish(self._files[:-1])
        self._files = self._files[-1:] + [(name, self.submit(function, *args))]

    def wait(self) -> None:
        """Wait for every file job; the first error is raised naming its file (queued jobs are then dropped)."""
        self._finish(self._files)

    def cancel(self) -> None:
        """Drop the jobs not yet started and wait for the running ones (their files are then complete)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._files = None, []

    def _finish(self, files: list[tuple[str, Future]]) -> None:
        for name, future in list(files):  # a copy: finished files leave self._files
            self._files.remove((name, future))
            try:
                future.result()
            except BundleInputError:  # it names its file and the fix already
                self.cancel()
                raise
            except Exception as e:
                self.cancel()
                raise RuntimeError(f"post-processing the results of {name} failed: {type(e).__name__}: {e}") from e
