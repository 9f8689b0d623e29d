# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle benchmark_streaming``: peak memory of streamed vs whole-volume inference.

Each run is ``python -m monai.bundle run`` in a fresh process (inference.json, or inference.json plus
inference_stream.json) on a generated stack, so its peak resident memory (RSS) is its own.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from bundle.measure import in_fresh_process

BUNDLE_ROOT = Path(__file__).resolve().parent.parent


def _inference_rss(configs: list[str], overrides: dict[str, Any]) -> dict[str, float]:
    """Run the configs in this (fresh) process; seconds and peak RSS in MB."""
    from monai.bundle import ConfigWorkflow

    start = time.perf_counter()
    workflow = ConfigWorkflow(
        config_file=[str(BUNDLE_ROOT / "configs" / c) for c in configs],
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(BUNDLE_ROOT),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_streaming_benchmark(
    sections: int = 20,
    size: int = 1024,
    features: tuple[int, ...] = (4, 8, 16, 32, 64),
    roi: int = 256,
    spatial_dims: int = 2,
    isotropic: bool = False,
) -> dict[str, Any]:
    """Peak RSS of whole-volume inference on a short stack and on ``sections`` sections, and of streaming the
    ``sections``.

    The network is a randomly initialised FusionNet of width ``features`` (the memory of the volume is what is
    measured; the network's own memory is the same in every run). For a 2D network the short stack is 1 section;
    for a 3D network (``configs/inference_3d.json``, ``roi``-cubed windows, slab-by-slab streaming) it is one window
    depth, ``roi`` sections, about what streaming holds. ``isotropic``: the stack is tagged 4 nm in z, y and x, so
    a 2D network runs along three planes (``scripts.planes``; the map only, no cells), and the short stack is a
    quarter of the sections.
    """
    import numpy as np
    import torch
    from scripts.fusionnet import FusionNet
    from scripts.io import PixelSize, write_tiff

    short = 1 if spatial_dims == 2 else min(roi, sections)
    short = max(2, sections // 4) if isotropic else short
    short_label = "whole_1_section" if short == 1 else f"whole_{short}_sections"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        torch.save(FusionNet(spatial_dims=spatial_dims, features=features).state_dict(), folder / "model.pt")
        stack = np.random.default_rng(0).integers(0, 256, (sections, size, size), dtype=np.uint8)
        for name, part in (("short", stack[:short]), ("many", stack)):
            pixel_size = PixelSize((4.0, 4.0, 4.0), "benchmark") if isotropic else None
            write_tiff(folder / name / "stack.tif", part, pixel_size)
        common = {
            "ckpt_path": str(folder / "model.pt"), "features": list(features), "roi_size": [roi] * spatial_dims,
            "plots": False, "instance_mode": "2d" if spatial_dims == 2 and not isotropic else "none",
        }  # fmt: skip
        configs = ["inference.json"] if spatial_dims == 2 else ["inference.json", "inference_3d.json"]
        runs = {
            short_label: (configs, "short"),
            f"whole_{sections}_sections": (configs, "many"),
            f"streamed_{sections}_sections": ([*configs, "inference_stream.json"], "many"),
        }
        report: dict[str, Any] = {
            "sections": sections, "size": size, "features": list(features), "spatial_dims": spatial_dims,
            "short_sections": short, "planes": "xy, xz, yz" if isotropic else "xy", "runs": {},
        }  # fmt: skip
        for label, (run_configs, data) in runs.items():
            overrides = {**common, "dataset_dir": str(folder / data), "output_dir": str(folder / f"out_{label}")}
            report["runs"][label] = in_fresh_process(_inference_rss, run_configs, overrides)
    rss = {k: v["peak_rss_mb"] for k, v in report["runs"].items()}
    one, whole, streamed = rss[short_label], rss[f"whole_{sections}_sections"], rss[f"streamed_{sections}_sections"]
    report["volume_mb_float32"] = sections * size * size * 4 / 2**20
    report["streamed_over_one_section"] = streamed / one  # over the short stack (one window depth in 3D)
    report["whole_over_streamed"] = whole / streamed
    return report


def format_streaming(report: dict[str, Any]) -> str:
    """The report as plain text."""
    dims = report.get("spatial_dims", 2)
    short = report.get("short_sections", 1)
    lines = [
        f"stack {report['sections']} x {report['size']} x {report['size']} "
        f"({report['volume_mb_float32']:.0f} MB as float32), {dims}D FusionNet width {report['features']}, "
        f"planes {report.get('planes', 'xy')}"
    ]
    lines += [f"{k:24} {v['seconds']:7.1f} s  peak RSS {v['peak_rss_mb']:7.0f} MB" for k, v in report["runs"].items()]
    lines.append(
        f"streamed / {'one-section' if short == 1 else f'{short}-section'} peak RSS: "
        f"{report['streamed_over_one_section']:.2f}x; whole-volume / streamed: {report['whole_over_streamed']:.2f}x"
    )
    return "\n".join(lines)
