# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle fibsem_mix``: the labelled data the two-modality model learns (ssTEM and FIB-SEM as one task).

- ISBI 2012's 20 sections (4 nm ssTEM, 0 = membrane) as they are, listed ``isbi_repeat`` times so that about half
  of the sections drawn are ssTEM (written with their 4 nm in the TIFF tags).
- The FIB-SEM medulla cube's training part, ``z < 200`` (z 200-249 is held out of every training), cut along the
  three planes (xy, xz, yz): an isotropic volume is segmented along all three, so the network sees all three.
  Membranes are drawn where the neuron label changes within the section (both sides: 2 pixels, 20 nm; the 0.12.0
  weights' target), grown by ``boundary_dilations`` pixels on each side (:func:`boundary_target`; 1 gave the 0.10.0
  and 0.11.0 weights' 4 pixels, which fill thin cells with membrane: ``python -m bundle fibsem_target_ceiling``). The
  FIB-SEM sections stay at their own 10 nm pixels (the two-modality model's FIB-SEM scale,
  ``scripts.scale.ISOTROPIC_MODEL_NM``).

Writes ``<output>/{isbi,fibsem_xy,fibsem_xz,fibsem_yz}_{image,label}.tif`` and ``<output>/datalist.json``, which
``--dataset_dir`` trains on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
#: FIB-SEM sections z >= this are the held-out block of docs and tests
FIBSEM_HELD_OUT_START = 200
#: the three planes of a (z, y, x) volume, as the axis order that makes each plane's sections the first axis
PLANE_AXES = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 0, 1)}


def boundary_target(neurons: np.ndarray, dilations: int) -> np.ndarray:
    """Membrane (True) of 2D sections ``(N, Y, X)`` of instance labels: both sides of each label change (2 pixels,
    ``scripts.transforms.boundaries_from_instances``), grown by ``dilations`` pixels on each side (2 + 2k pixels)."""
    from scripts.transforms import boundaries_from_instances

    boundary = boundaries_from_instances(neurons, 2)
    if dilations > 0:
        cross = ndimage.generate_binary_structure(2, 1)[None]
        boundary = ndimage.binary_dilation(boundary, cross, iterations=int(dilations))
    return boundary


def three_plane_target(neurons: np.ndarray, dilations: int) -> np.ndarray:
    """The membrane target of a ``(Z, Y, X)`` neuron volume as the three-plane path sees it: :func:`boundary_target`
    drawn in the xy, xz and yz sections and averaged; float32 in [0, 1], ``(Z, Y, X)``."""
    planes = []
    for axes in PLANE_AXES.values():
        target = boundary_target(np.ascontiguousarray(neurons.transpose(axes)), dilations)
        planes.append(target.transpose(np.argsort(axes)).astype(np.float32))
    return np.mean(planes, axis=0)


def fibsem_planes(z_stop: int = FIBSEM_HELD_OUT_START) -> tuple[np.ndarray, np.ndarray]:
    """The FIB-SEM cube's sections ``z < z_stop``: ``(volume, neurons)``, ``(Z, Y, X)`` each."""
    import tifffile

    folder = SHARED / "fibsem_medulla"
    return tifffile.imread(folder / "volume.tif")[:z_stop], tifffile.imread(folder / "neuron-labels.tif")[:z_stop]


def write_mix(
    output: str = "runs/mix/data", boundary_dilations: int = 0, isbi_repeat: int = 35, isbi_sections: int = 20
) -> str:
    """Write the two-modality training set (see the module docstring) into ``output``; returns its datalist.
    ``isbi_sections`` < 20 keeps ISBI's first sections only (the fold protocol: 10, the rest scored)."""
    import tifffile

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    tags = {"resolution": (1e7 / 10, 1e7 / 10), "resolutionunit": "CENTIMETER"}  # 10 nm pixels
    volume, neurons = fibsem_planes()
    pairs = []
    for plane, axes in PLANE_AXES.items():
        image = np.ascontiguousarray(volume.transpose(axes))
        label = np.where(boundary_target(np.ascontiguousarray(neurons.transpose(axes)), boundary_dilations), 0, 255)
        tifffile.imwrite(out / f"fibsem_{plane}_image.tif", image, **tags)
        tifffile.imwrite(out / f"fibsem_{plane}_label.tif", label.astype(np.uint8), **tags)
        pairs.append({"image": f"fibsem_{plane}_image.tif", "label": f"fibsem_{plane}_label.tif"})
    isbi = {}
    for kind, name in (("image", "train-volume.tif"), ("label", "train-labels.tif")):
        stack = tifffile.imread(SHARED / "isbi2012" / name)[: int(isbi_sections)]
        tifffile.imwrite(out / f"isbi_{kind}.tif", stack, resolution=(1e7 / 4, 1e7 / 4), resolutionunit="CENTIMETER")
        isbi[kind] = f"isbi_{kind}.tif"
    pairs += [isbi] * int(isbi_repeat)
    datalist = out / "datalist.json"
    datalist.write_text(json.dumps({"training": pairs}, indent=2) + "\n")
    return str(datalist)
