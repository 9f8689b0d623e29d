# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The whole inference job, timed as a user runs it: ``python -m monai.bundle run --config_file
configs/inference.json`` in a fresh process (start-up, reading, the network, cells, table, plots, writing), on the
30-section ISBI 2012 test stack (or a generated stack of the same size where ``../shared`` is absent).

The figure of merit is the *useful* network work, one forward pass per section at the shipped width, per second of
the whole job, as a fraction of the machine's measured matmul peak: the share of the machine the job turns into
segmentation. Sliding-window overlap, TTA, start-up and post-processing all lower it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
ISBI_TEST_STACK = ROOT.parent / "shared" / "data" / "isbi2012" / "test-volume.tif"


def job_stack(folder: Path, sections: int = 30, size: int = 512, pixel_size: float = 0.0) -> tuple[Path, str]:
    """The stack to segment: the ISBI test stack if present (and the size asked for is its own), else a generated
    EM-like stack of ``sections`` x ``size`` x ``size`` written into ``folder``. With ``pixel_size`` (nm) the 4 nm
    stack is resampled to it (cubic, antialiased when it shrinks) and written with resolution tags saying so, as a
    microscope at that pixel size would give it. Returns its path and a description."""
    from scripts.io import PixelSize, write_tiff

    if ISBI_TEST_STACK.is_file() and (sections, size) == (30, 512):
        path, description = ISBI_TEST_STACK, "ISBI 2012 test stack (30 x 512 x 512)"
    else:
        from scripts.synthetic import make_em_stack

        image, _ = make_em_stack((sections, size, size), seed=0)
        path, description = folder / "em-stack.tif", f"generated EM-like stack ({sections} x {size} x {size})"
        write_tiff(path, image)
    if not pixel_size:
        return path, description
    import tifffile
    import torch.nn.functional as F

    image = torch.as_tensor(tifffile.imread(path), dtype=torch.float32)[:, None]
    shape = tuple(int(round(n * 4.0 / pixel_size)) for n in image.shape[-2:])
    image = F.interpolate(image, size=shape, mode="bicubic", align_corners=False, antialias=pixel_size > 4.0)
    resampled = folder / f"em-stack-{pixel_size:g}nm.tif"
    write_tiff(resampled, image[:, 0].clamp(0, 255).round().to(torch.uint8).numpy(),
               pixel_size=PixelSize((50.0, float(pixel_size), float(pixel_size)), "benchmark"))  # fmt: skip
    return resampled, f"{description} resampled to {pixel_size:g} nm ({shape[0]} x {shape[1]}, resolution tags)"


def useful_gflop_per_section(features: Sequence[int], size: int) -> float:
    """GFLOP of one forward pass of FusionNet at ``features`` over one ``size`` x ``size`` section."""
    from bundle.measure import count_flops
    from scripts.fusionnet import FusionNet

    network = FusionNet(features=tuple(features)).eval()
    x = torch.zeros(1, 1, size, size)
    with torch.inference_mode():
        return count_flops(lambda: network(x)) / 1e9


def run_job(
    stack: Path, output_dir: Path, overrides: Sequence[str] = (), config: str = "configs/inference.json"
) -> float:
    """Wall-clock seconds of ``python -m monai.bundle run --config_file <config>`` on ``stack``, from the bundle
    root, in a fresh process; raises with its error output if it fails."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--dataset_dir", str(stack)]
    command += ["--output_dir", str(output_dir), *overrides]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def job_benchmark(
    peak_gflops: dict[str, float],
    native_bf16: bool,
    features: Sequence[int],
    sections: int = 30,
    size: int = 512,
    overrides: Sequence[str] = (),
    pixel_size: float = 0.0,
) -> dict[str, Any]:
    """Time the default inference job on the stack of :func:`job_stack`; ``peak_gflops`` are the measured matmul
    peaks ("fp32", "bf16"). Returns seconds in all, per section, and the useful GFLOP/s as a fraction of each peak
    (the bf16 one only where bf16 is native)."""
    with tempfile.TemporaryDirectory() as tmp:
        stack, description = job_stack(Path(tmp), sections, size, pixel_size)
        seconds = run_job(stack, Path(tmp) / "out", overrides)
        outputs = sorted(p.name for p in (Path(tmp) / "out").iterdir())
    useful = useful_gflop_per_section(features, size) * sections / seconds
    fractions = {"fp32": useful / peak_gflops["fp32"]}
    if native_bf16 and "bf16" in peak_gflops:
        fractions["bf16"] = useful / peak_gflops["bf16"]
    return {
        "stack": description,
        "overrides": list(overrides),
        "sections": sections,
        "seconds": seconds,
        "seconds_per_section": seconds / sections,
        "useful_gflops": useful,
        "fraction_of_peak": fractions,
        "outputs": outputs,
    }


def format_job(row: dict[str, Any]) -> str:
    """One line for the report."""
    fractions = ", ".join(f"{f:.2f} of the {p} peak" for p, f in row["fraction_of_peak"].items())
    settings = " ".join(row["overrides"]) or "inference.json defaults"
    return (
        f"whole job ({settings}, start-up included) on the {row['stack']}: {row['seconds']:.1f} s, "
        f"{row['seconds_per_section']:.3f} s/section, useful {row['useful_gflops']:.0f} GFLOP/s = {fractions}"
    )
