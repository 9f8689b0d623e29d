# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The Dask cluster blockwise inference runs on: a ``LocalCluster`` on this machine, or a running scheduler."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import BundleInputError
from ..settings import integer

SCHEDULER_FIX = "pass --scheduler local:2 (two worker processes on this machine) or a scheduler address tcp://host:8786"


def local_workers(scheduler: object) -> int | None:
    """The number of workers of a ``local:N`` scheduler setting, or None for a scheduler address."""
    text = str(scheduler).strip()
    if text == "local":
        return 2
    if text.startswith("local:"):
        count = text.partition(":")[2]
        return integer(int(count) if count.isdigit() else count, "scheduler", 1, "local:2")
    if "://" in text:
        return None
    raise BundleInputError("scheduler", f"unknown value {scheduler!r}", SCHEDULER_FIX)


@contextmanager
def dask_client(
    scheduler: object = "local:2", memory_limit: str | int = "auto"
) -> Iterator["distributed.Client"]:  # noqa: F821
    """A ``distributed.Client`` for ``scheduler``, closed (with its cluster, if made here) on exit.

    ``local:N`` starts a ``LocalCluster`` of N worker processes with one task thread each (a block's network call
    uses the cores through PyTorch's own threads, see ``scripts.blockwise.volume.InferencePlugin``) and ``memory_limit``
    per worker, beyond which Dask spills and restarts as it does; an address such as ``tcp://host:8786`` connects
    to a running scheduler (e.g. dask-jobqueue's ``SLURMCluster``).
    """
    from distributed import Client, LocalCluster

    workers = local_workers(scheduler)
    if workers is None:
        try:
            client = Client(str(scheduler).strip(), timeout="30s")
        except OSError as e:
            raise BundleInputError("scheduler", f"no Dask scheduler answers at {scheduler} ({e})", SCHEDULER_FIX) from e
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit, dashboard_address=":0"
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def host_threads(client: "distributed.Client") -> dict[str, int]:  # noqa: F821
    """Task threads of the cluster's workers on each host, ``{host: threads}``: on a LocalCluster of N one-thread
    workers, N on this machine. Workers divide their host's cores by it for PyTorch (``InferencePlugin``)."""
    counts: dict[str, int] = {}
    for worker in client.scheduler_info()["workers"].values():
        counts[worker["host"]] = counts.get(worker["host"], 0) + int(worker["nthreads"])
    return counts
