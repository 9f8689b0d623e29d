# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle scale_check``: the shipped model on labelled EM at other pixel sizes, as inference.json runs it.

ISBI 2012 sections (4 nm ssTEM) are resampled with their labels to other pixel sizes (image: cubic, antialiased when
it shrinks; labels: nearest) and the FIB-SEM medulla sections (10 nm isotropic, boundaries where the neuron label
changes, as its README says) are taken as they are. Each case is segmented three ways: with its pixel size known
(as a file with resolution tags gives it), with none (a bare file: ``zoom`` auto estimates), and with the network on
the input's own pixels (zoom 1, the bundle before it was scale-aware). The ISBI sections trained the shipped model,
so their absolute scores are optimistic; the comparison across pixel sizes is the point. The FIB-SEM sections are
held out of every training (z 200-249); they are scored section by section here (xy only, not three planes).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def resampled_sstem(sections: list[int], nm: float) -> tuple[np.ndarray, np.ndarray]:
    """ISBI 2012 ``sections`` (4 nm) and their labels resampled to ``nm`` per pixel: ``(Z, Y, X)`` uint8 each."""
    import tifffile

    image = tifffile.imread(SHARED / "isbi2012" / "train-volume.tif")[sections]
    label = tifffile.imread(SHARED / "isbi2012" / "train-labels.tif")[sections]
    shape = tuple(int(round(n * 4.0 / nm)) for n in image.shape[1:])
    x = torch.as_tensor(image, dtype=torch.float32)[:, None]
    shrink = nm > 4.0
    x = F.interpolate(x, size=shape, mode="bicubic", align_corners=False, antialias=shrink).clamp(0, 255)
    cells = F.interpolate(torch.as_tensor(label != 0, dtype=torch.float32)[:, None], size=shape, mode="nearest")
    return x[:, 0].round().numpy().astype(np.uint8), (cells[:, 0].numpy() > 0.5).astype(np.uint8) * 255


def fibsem_sections(z_start: int, z_stop: int) -> tuple[np.ndarray, np.ndarray]:
    """FIB-SEM medulla sections ``z_start .. z_stop - 1`` and ISBI-style labels: 0 where a voxel's 6-neighbour has
    another neuron label."""
    import tifffile

    image = tifffile.imread(SHARED / "fibsem_medulla" / "volume.tif")[z_start:z_stop]
    neurons = tifffile.imread(SHARED / "fibsem_medulla" / "neuron-labels.tif")
    lo, hi = max(z_start - 1, 0), min(z_stop + 1, neurons.shape[0])
    block = neurons[lo:hi]
    boundary = np.zeros(block.shape, bool)
    for axis in range(3):
        change = np.diff(block, axis=axis) != 0
        before, after = [slice(None)] * 3, [slice(None)] * 3
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        boundary[tuple(before)] |= change
        boundary[tuple(after)] |= change
    boundary = boundary[z_start - lo : z_start - lo + (z_stop - z_start)]
    return image, np.where(boundary, 0, 255).astype(np.uint8)


def run_scale_check(
    sections: tuple[int, ...] = (0, 5, 10, 15),
    pixel_sizes: tuple[float, ...] = (2, 3, 4, 6, 8, 12),
    fibsem: tuple[int, int] = (200, 230),
    tta: bool = False,
) -> list[dict]:
    """One row per case and way (see the module docstring): zoom, V_rand, V_info, seconds of the zoom choice."""
    from scripts.checkpoint import load_weights
    from scripts.fusionnet import FusionNet
    from scripts.inferers import MembraneInferer, prepare_network
    from scripts.io import PixelSize
    from scripts.isbi_metrics import isbi_scores
    from scripts.scale import ZoomPolicy, model_isotropic_pixel_size, model_pixel_size, pick_sections
    from scripts.transforms import normalize_sections

    weights = str(ROOT / "models" / "model.pt")
    network = FusionNet(2, 1, 1, features=[16, 32, 64, 128, 256])
    network = prepare_network(load_weights(network, weights), "cpu", True, True)
    inferer = MembraneInferer(roi_size=[1024, 1024], tta=tta, precision="auto")
    policy = ZoomPolicy("auto", "file", model_pixel_size(weights), 2, network, inferer,
                        isotropic_pixel_size=model_isotropic_pixel_size(weights))  # fmt: skip
    # ssTEM sections are 50 nm apart, FIB-SEM voxels isotropic: what their files would say
    cases = [(f"ssTEM {nm:g} nm", (50.0, nm, nm), *resampled_sstem(list(sections), nm)) for nm in pixel_sizes]
    if fibsem:
        cases.append(("FIB-SEM 10 nm", (10.0, 10.0, 10.0), *fibsem_sections(*fibsem)))
    rows = []
    for name, nm, image, label in cases:
        normalized = normalize_sections(torch.as_tensor(image, dtype=torch.float32))
        for way in ("pixel size known", "no pixel size", "as is (zoom 1)"):
            start = time.perf_counter()
            if way == "as is (zoom 1)":
                zoom = (1.0, 1.0)
            else:
                known = PixelSize(nm, "scale_check") if way == "pixel size known" else None
                zoom = policy.choose(name, lambda: normalized[pick_sections(len(normalized))][:, None], known).zoom
            chosen = time.perf_counter() - start
            with torch.inference_mode():
                prob = inferer(normalized[None, None], network, zoom=zoom)[0, 0].numpy()
            scores = isbi_scores(prob, label)
            rows.append({"case": name, "way": way, "zoom": round(zoom[0], 3), "v_rand": scores["v_rand"],
                         "v_info": scores["v_info"], "choice_seconds": round(chosen, 1)})  # fmt: skip
    return rows


def format_scale_check(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| case | way | zoom | V_rand | V_info |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['way']} | {r['zoom']:g} | {r['v_rand']:.4f} | {r['v_info']:.4f} |" for r in rows]
    return "\n".join(lines)
