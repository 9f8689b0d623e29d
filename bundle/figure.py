# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle figure``: the model card's picture (docs/isbi2012_example.png), made by the shipped model.

A crop of one section of real EM (the ISBI 2012 training stack in ``../shared/data``, never copied into the
repository) is written to a temporary folder and segmented with ``python -m bundle infer`` in a fresh process, as a
user runs it; the PNG shows the crop, the membrane probability (``_prob.tif``) and the cells (``_seg.tif``) drawn
over the crop, side by side, with a 0.5 micrometre scale bar (ISBI 2012: 4 nm per pixel). The PNG is stored with a
palette to stay small.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISBI_TRAIN_STACK = str(ROOT.parent / "shared" / "data" / "isbi2012" / "train-volume.tif")
FIGURE = str(ROOT / "docs" / "isbi2012_example.png")
NM_PER_PIXEL = 4.0  # ISBI 2012 ssTEM: 4 x 4 nm pixels, 50 nm sections


def _segment(crop_file: Path, output_dir: Path, tta: bool) -> None:
    """``python -m bundle infer`` on one image, from the bundle root, in a fresh process (the shipped model)."""
    command = [sys.executable, "-m", "bundle", "infer", "--dataset_dir", str(crop_file), "--output_dir",
               str(output_dir), "--tta", str(tta).lower(), "--plots", "false"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def _compose(image, prob, cells, path: Path, caption: str) -> int:
    """The three panels as one palette PNG at ``path``; returns its size in bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    grey = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
    overlay = label2rgb(cells, image=grey, bg_label=0, alpha=0.35, image_alpha=1.0)
    overlay[find_boundaries(cells, mode="inner") | (cells == 0)] = (1.0, 1.0, 0.0)  # cell borders in yellow
    bar = 500.0 / NM_PER_PIXEL  # a 0.5 micrometre scale bar, in pixels
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.35), dpi=100)
    panels = ((grey, "EM (ISBI 2012)", "gray"), (prob, "membrane probability (_prob)", "magma"),
              (overlay, "cells over the EM (_seg)", None))  # fmt: skip
    for ax, (data, title, cmap) in zip(axes, panels):
        ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    height = image.shape[0]
    axes[0].plot([8, 8 + bar], [height - 10, height - 10], color="white", linewidth=3)
    axes[0].text(8 + bar / 2, height - 16, "0.5 µm", color="white", ha="center", va="bottom", fontsize=9)
    fig.text(0.5, 0.02, caption, ha="center", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.1, wspace=0.03)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    picture = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, optimize=True)
    return path.stat().st_size


def make_figure(
    output: str = FIGURE,
    volume: str = ISBI_TRAIN_STACK,
    section: int = 0,
    y: int = 128,
    x: int = 128,
    size: int = 256,
    tta: bool = False,
) -> str:
    """Segment a ``size`` x ``size`` crop at (``y``, ``x``) of ``section`` of ``volume`` with the shipped model and
    write the model card's picture to ``output`` (default docs/isbi2012_example.png); returns its path and size."""
    import numpy as np
    import tifffile
    from scripts.errors import BundleInputError, as_bool

    if not Path(volume).is_file():
        raise BundleInputError(volume, "not found", "pass --volume <an EM stack>, e.g. the ISBI 2012 training stack")
    stack = tifffile.imread(volume)
    stack = stack[None] if stack.ndim == 2 else stack
    crop = np.ascontiguousarray(stack[int(section), int(y) : int(y) + int(size), int(x) : int(x) + int(size)])
    with tempfile.TemporaryDirectory() as tmp:
        crop_file = Path(tmp) / "isbi2012-crop.tif"
        tifffile.imwrite(crop_file, crop)
        _segment(crop_file, Path(tmp) / "out", as_bool(tta, "tta"))
        prob = tifffile.imread(Path(tmp) / "out" / "isbi2012-crop_prob.tif")
        cells = tifffile.imread(Path(tmp) / "out" / "isbi2012-crop_seg.tif")
    caption = (
        f"ISBI 2012 training section {section}, crop y {y}-{y + size}, x {x}-{x + size}; shipped model, "
        f"{'TTA' if as_bool(tta, 'tta') else 'one pass'}. EM data: Cardona et al. 2010"
    )
    written = _compose(crop.astype(np.float32), prob, cells, Path(output), caption)
    return f"{output} ({written / 1024:.0f} KiB)"
