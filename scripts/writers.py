# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Writing inference results: ``<stem>_prob.<ext>``, ``<stem>_seg.<ext>`` and ``<stem>_cells.csv``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .errors import BundleInputError, as_bool
from .instances import INSTANCE_MODES, seed_options, segment_cells
from .io import OUTPUT_FORMATS, image_stem, write_result
from .morphology import cell_table, write_cell_table
from .outputs import result_path
from .plots import save_morphology_histograms, save_overlay
from .settings import choice, output_folder
from .transforms import TARGETS


class SaveEMResultsd(MapTransform):
    """Write the membrane probability, cell labels and cell table of one image.

    Expects ``d[key]`` = membrane probability ``(1, Z, Y, X)`` and the ``image_path``/``image_layout``/
    ``image_spacing`` entries from ``LoadStackd``. Writes, each atomically (no partial file on failure):

    - ``<output_dir>/<stem>_prob.<ext>``: float32 in [0, 1], the input's shape (``<ext>`` and axis order from
      ``output_format``, see ``scripts.io.write_result``: by default TIFF, or the input's own format with its
      affine for a NIfTI input and chunked OME-Zarr for a zarr input);
    - ``<output_dir>/<stem>_seg.<ext>``: uint32 cell labels (0 = boundary), same shape (unless mode "none");
    - ``<output_dir>/<stem>_cells.csv``: one row per cell (unless mode "none");
    - with ``plots``: ``<stem>_overlay.png`` (cells over a few sections of ``d["image"]``) and
      ``<stem>_morphology.png`` (histograms of cell size, diameter and shape).

    Args:
        keys: the probability key (usually "pred").
        output_dir: folder for the results (created if missing; temporaries that killed runs left in it are
            removed here, see ``scripts.outputs.remove_stale_temporaries``).
        instance_mode: "2d" (per section), "3d" (whole volume) or "none" (probability only).
        seed_threshold: watershed seeds are regions with probability below it.
        min_seed_size: smaller seeds are ignored.
        seeds: "components" (one seed per connected interior region) or "distance" (distance-transform maxima,
            for 3D); see ``scripts.instances.segment_cells``.
        seed_distance: height (pixels) of a distance maximum that makes a seed, for "distance" seeds.
        plots: also write the overlay and histogram PNGs (needs an instance mode other than "none").
        target: what the network predicts (see ``scripts.transforms.MakeTargetd``); "foreground" maps are
            segmented as objects, the others as boundaries between cells.
        output_format: "auto", "tif", "h5", "zarr" or "nii.gz" (``scripts.io.OUTPUT_FORMATS``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        instance_mode: str = "2d",
        seed_threshold: float = 0.5,
        min_seed_size: int = 16,
        seeds: str = "components",
        seed_distance: float = 2.0,
        plots: bool = False,
        target: str = "membrane",
        output_format: str = "auto",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if instance_mode not in INSTANCE_MODES:
            raise BundleInputError(
                "instance_mode", f"unknown value {instance_mode!r}", f"use one of {', '.join(INSTANCE_MODES)}"
            )
        self.output_dir = output_folder(output_dir)
        self.instance_mode = instance_mode
        target = choice(target, "target", TARGETS)
        self.segment_options = seed_options(seed_threshold, min_seed_size, seeds, seed_distance, target == "foreground")
        self.plots = as_bool(plots, "plots")
        self.output_format = choice(output_format, "output_format", OUTPUT_FORMATS)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            prob = (pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred))[0]
            prob = np.clip(prob.astype(np.float32, copy=False), 0.0, 1.0)
            source, spacing = str(d["image_path"]), d.get("image_spacing") or None
            stem = image_stem(source)
            shape = prob.shape[1:] if str(d["image_layout"]) in ("yx", "xy") else prob.shape  # a 2D image stays 2D

            def write(kind: str, volume: np.ndarray) -> None:
                write_result(
                    self.output_dir, source, kind, iter(volume), shape, volume.dtype, self.output_format, spacing
                )

            write("_prob", prob)
            if self.instance_mode != "none":
                cells = segment_cells(prob, self.instance_mode, **self.segment_options)
                write("_seg", cells)
                rows = cell_table(cells, self.instance_mode, spacing)
                write_cell_table(result_path(self.output_dir, stem, "_cells", "csv"), rows, self.instance_mode)
                if self.plots:
                    image = d["image"]
                    image = (image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image))[0]
                    save_overlay(image, cells, result_path(self.output_dir, stem, "_overlay", "png"))
                    size_key = "volume_px" if self.instance_mode == "3d" else "area_px"
                    histograms = result_path(self.output_dir, stem, "_morphology", "png")
                    save_morphology_histograms(rows, histograms, size_key=size_key)
        return d
