# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Helpers for running the bundle's workflows in several processes with ``torchrun`` (one per GPU, or several
on CPUs with the gloo backend), used by ``configs/multi_gpu_train.json`` and ``configs/multi_gpu_inference.json``.

Everything here also works in a single process without ``torch.distributed`` initialised (rank 0 of 1).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .io import RESULT_EXTENSIONS
from .outputs import RESULT_KINDS

__all__ = [
    "LOGGING_HANDLERS",
    "RESULT_SUFFIXES",
    "default_backend",
    "device_ids",
    "for_this_rank",
    "init",
    "local_device",
    "rank",
    "shard",
    "world_size",
    "write_file_report",
]

#: The result files inference may write for an image ``<stem>``: ``<stem><suffix>`` (names: ``scripts.outputs``;
#: image formats: ``scripts.io.RESULT_EXTENSIONS``).
RESULT_SUFFIXES = tuple(
    f"{kind}.{ext}"
    for kind, extensions in zip(RESULT_KINDS, (RESULT_EXTENSIONS,) * 2 + (("csv",), ("png",), ("png",)))
    for ext in extensions
)
#: Handlers that only log; on ranks other than 0 they would repeat rank 0's lines and files.
LOGGING_HANDLERS = ("StatsHandler", "TensorBoardStatsHandler", "ProgressBar", "InferenceProgress")


def default_backend() -> str:
    """The process group backend: "nccl" where CUDA (and NCCL) is available, else "gloo" (CPU processes)."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def local_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` (``torchrun`` sets ``LOCAL_RANK``) if CUDA is available, else CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return torch.device("cpu")


def device_ids(device: torch.device) -> list[torch.device] | None:
    """``DistributedDataParallel``'s ``device_ids``: ``[device]`` for a GPU, None for the CPU."""
    return [device] if torch.device(device).type == "cuda" else None


def init(backend: str, device: torch.device) -> None:
    """Join the process group (``torchrun``'s environment) unless already joined; select ``device`` if a GPU."""
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(device)


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes, 1 without a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def for_this_rank(handlers: Sequence[Any] | None) -> list[Any]:
    """``handlers`` on rank 0; on other ranks without the logging ones (:data:`LOGGING_HANDLERS`).

    Checkpoint savers stay on every rank: ignite writes their files on rank 0 only, and every rank needs their
    bookkeeping (e.g. to resume).
    """
    handlers = list(handlers or [])
    if rank() == 0:
        return handlers
    return [h for h in handlers if type(h).__name__ not in LOGGING_HANDLERS]


def shard(data: Sequence[Any]) -> list[Any]:
    """This rank's share of ``data``: items ``rank, rank + world_size, ...``, so every item goes to exactly one
    rank (as ``monai.data.partition_dataset(shuffle=False, even_divisible=False)`` splits, but a rank may get none
    when there are fewer items than ranks)."""
    return list(data)[rank() :: world_size()]


def write_file_report(
    datalist: Sequence[dict[str, str]], output_dir: str | os.PathLike, name: str = "files.csv"
) -> Path:
    """After every rank has finished, rank 0 writes ``<output_dir>/<name>``: one row per input image with the
    rank that segmented it and the result files found for it. Returns the report's path (on every rank).

    Call it on all ranks (it waits for all of them).
    """
    from .io import image_stem
    from .settings import path_setting

    output_dir = path_setting(output_dir, "output_dir")
    if world_size() > 1:
        dist.barrier()
    report = Path(output_dir) / name
    if rank() == 0:
        report.parent.mkdir(parents=True, exist_ok=True)
        with report.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "rank", "outputs"])
            for i, item in enumerate(datalist):  # shard() gives item i to rank i % world_size
                stem = image_stem(item["image"])
                outputs = [stem + s for s in RESULT_SUFFIXES if (Path(output_dir) / (stem + s)).exists()]
                writer.writerow([item["image"], i % world_size(), " ".join(outputs)])
    if world_size() > 1:
        dist.barrier()
    return report
