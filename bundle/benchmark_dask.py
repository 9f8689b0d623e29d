# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle benchmark_dask``: blockwise inference (configs/inference_dask.json's ``BlockwiseSegmenter``)
of a generated zarr volume on a LocalCluster of 1 and of 2 workers, each with a memory limit smaller than the
volume: seconds, peak memory (RSS) of each worker, and the scaling efficiency ``t1 / (2 * t2)``."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (run on each worker)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _volume(folder: Path, sections: int, size: int) -> Path:
    """A generated EM-like ``sections x size x size`` uint8 zarr volume, one section per chunk (an 8-section
    stack repeated along z: generating every section is slower than the benchmark)."""
    import numpy as np
    from scripts.io import create_zarr, finalize_zarr
    from scripts.synthetic import make_em_stack

    stack, _ = make_em_stack((8, size, size), seed=0)
    path = folder / "volume.zarr"
    array = create_zarr(path, (sections, size, size), np.uint8)
    for z in range(0, sections, 8):
        array[z : z + 8] = stack[: min(8, sections - z)]
    finalize_zarr(path)
    return path


def run_dask_benchmark(
    sections: int = 64,
    size: int = 1024,
    workers: tuple[int, ...] = (1, 2),
    memory_limit: str = "1GB",
    features: tuple[int, ...] = (4, 4, 8, 8, 16),
    block_sections: int = 4,
) -> dict[str, Any]:
    """Time blockwise inference (probability and 2D cells) of a generated volume on LocalClusters of each number
    of ``workers`` (one process each, ``memory_limit`` each); a randomly initialised FusionNet of width
    ``features`` (the scaling is what is measured)."""
    import torch
    from distributed import Client, LocalCluster
    from scripts.blockwise import BlockwiseSegmenter
    from scripts.fusionnet import FusionNet
    from scripts.inferers import MembraneInferer

    torch.manual_seed(0)
    network = FusionNet(features=features).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        volume = _volume(Path(tmp), sections, size)
        for count in workers:
            with LocalCluster(
                n_workers=count, threads_per_worker=1, memory_limit=memory_limit, dashboard_address=":0"
            ) as cluster, Client(cluster) as client:
                client.wait_for_workers(count)
                inferer = MembraneInferer(roi_size=[1024, 1024], precision="fp32")
                job = BlockwiseSegmenter(network, inferer, f"{tmp}/out{count}", scheduler=cluster.scheduler_address,
                                         block_size=[block_sections, None, None])  # fmt: skip
                start = time.perf_counter()
                job.run([str(volume)])
                seconds = time.perf_counter() - start
                peaks = sorted(client.run(_peak_rss_mb).values())
            rows.append({"workers": count, "seconds": seconds, "peak_rss_mb": peaks})
    single = next((r["seconds"] for r in rows if r["workers"] == 1), None)
    for row in rows:
        row["efficiency"] = single / (row["workers"] * row["seconds"]) if single else None
    return {
        "volume": f"{sections} x {size} x {size} uint8 ({sections * size * size * 4 / 1e9:.2f} GB as float32 probability)",
        "memory_limit": memory_limit,
        "features": list(features),
        "runs": rows,
    }


def format_dask(report: dict[str, Any]) -> str:
    """The report as lines of text."""
    lines = [f"volume {report['volume']}, worker memory limit {report['memory_limit']}, FusionNet {report['features']}"]
    for row in report["runs"]:
        peaks = ", ".join(f"{p:.0f}" for p in row["peak_rss_mb"])
        lines.append(
            f"{row['workers']} worker(s): {row['seconds']:.1f} s, peak RSS per worker {peaks} MB, "
            f"scaling efficiency {row['efficiency']:.2f}"
        )
    return "\n".join(lines)
