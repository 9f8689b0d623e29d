# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Section-by-section inference for TIFF stacks larger than memory.

A 2D network sees one section at a time, and the per-section normalization, sliding window and 2D watershed
never look across sections, so streaming a stack one section at a time gives exactly the whole-volume result
while memory holds one section (plus the network), whatever the number of sections.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .errors import BundleInputError
from .inferers import MembraneInferer
from .instances import segment_cells
from .io import TIFF_SUFFIXES, atomic_path, check_values, image_stem, image_suffix, tiff_spacing
from .morphology import COLUMNS_2D, cell_table

BIGTIFF_BYTES = 2**32 - 2**25  # classic TIFF offsets are 32-bit; leave room for the page tables


class TiffSections:
    """A (multi-page) TIFF stack read one ``(Y, X)`` section at a time.

    Attributes:
        path: the file.
        shape: the stack's shape as stored: ``(Z, Y, X)``, or ``(Y, X)`` for a single image.
        spacing: ``(z, y, x)`` voxel size, or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import tifffile

        self.path = str(path)
        if image_suffix(self.path) not in TIFF_SUFFIXES:
            raise BundleInputError(
                self.path,
                "streaming reads TIFF stacks only",
                "convert it to a multi-page TIFF, or use configs/inference.json",
            )
        if not os.path.isfile(self.path) or os.path.getsize(self.path) == 0:
            raise BundleInputError(self.path, "file not found or empty", "check the path or re-copy the stack")
        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                self.shape, axes, self.dtype = tuple(series.shape), series.axes, series.dtype
                self.spacing = tiff_spacing(tif)
        except Exception as e:  # tifffile raises many types for corrupt files
            raise BundleInputError(
                self.path, f"cannot be read as a TIFF ({type(e).__name__}: {e})", "re-export it"
            ) from e
        if "S" in axes or len(self.shape) not in (2, 3):
            raise BundleInputError(
                self.path,
                f"has shape {self.shape} (axes {axes}), not a grayscale section or stack",
                "save it as (Z, Y, X)",
            )

    def __len__(self) -> int:
        return self.shape[0] if len(self.shape) == 3 else 1

    def __iter__(self) -> Iterator[np.ndarray]:
        import tifffile

        with tifffile.TiffFile(self.path) as tif:
            for z in range(len(self)):
                try:
                    section = tif.asarray(key=z)
                except Exception as e:
                    raise BundleInputError(
                        self.path,
                        f"section {z} cannot be read ({type(e).__name__}: {e})",
                        "the file is truncated; re-export it",
                    ) from e
                check_values(section, f"{self.path} (section {z})")
                yield section


def write_tiff_sections(path: str, sections: Iterator[np.ndarray], shape: Sequence[int], dtype: np.dtype) -> None:
    """Write ``(Y, X)`` sections as they come into one zlib-compressed TIFF series of ``shape``, atomically
    (BigTIFF when the data would not fit classic TIFF's 4 GB)."""
    import tifffile

    big = int(np.prod(shape)) * np.dtype(dtype).itemsize > BIGTIFF_BYTES
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data=sections,
            shape=tuple(shape),
            dtype=dtype,
            compression="zlib",
            photometric="minisblack",
            bigtiff=big,
        )


class StreamingSegmenter:
    """``configs/inference_stream.json``: the outputs of ``configs/inference.json`` for 2D networks, one section at
    a time, so that stacks of any length fit in memory.

    For every stack ``X.tif`` it writes ``X_prob.tif`` (float32 membrane probability), ``X_seg.tif`` (uint32 cells,
    per-section watershed) and ``X_cells.csv``, identical to whole-volume inference (the overlay plots, which need
    the whole stack, are not drawn). The probability is written first and segmented in a second pass over it.

    Args:
        network: a 2D network (eval mode is set here).
        inferer: the sliding-window inferer of inference.json.
        output_dir: folder for the results.
        device: where the network runs.
        instance_mode: "2d" or "none" ("3d" needs the whole volume).
        seed_threshold, min_seed_size, seeds, seed_distance: watershed seeds, see ``scripts.instances.segment_cells``.
        target: "foreground" maps are segmented as objects (see ``scripts.writers.SaveEMResultsd``).
    """

    def __init__(
        self,
        network: nn.Module,
        inferer: MembraneInferer,
        output_dir: str,
        device: torch.device | str = "cpu",
        instance_mode: str = "2d",
        seed_threshold: float = 0.5,
        min_seed_size: int = 16,
        seeds: str = "components",
        seed_distance: float = 2.0,
        target: str = "membrane",
    ) -> None:
        if inferer.spatial_dims != 2:
            raise BundleInputError(
                "spatial_dims", "streaming runs 2D networks only", "use configs/inference.json for 3D"
            )
        if instance_mode not in ("2d", "none"):
            raise BundleInputError(
                "instance_mode", f"{instance_mode!r} needs the whole volume in memory", "use 2d or none when streaming"
            )
        self.network, self.inferer, self.device = network.eval(), inferer, torch.device(device)
        self.output_dir, self.instance_mode = str(output_dir), instance_mode
        self.segment_options = dict(
            seed_threshold=seed_threshold, min_seed_size=min_seed_size, foreground=target == "foreground",
            seeds=seeds, seed_distance=seed_distance,
        )  # fmt: skip

    def probabilities(self, stack: TiffSections) -> Iterator[np.ndarray]:
        """Membrane probability of each section, ``(Y, X)`` float32 in [0, 1]."""
        from .transforms import normalize_sections

        with torch.inference_mode():
            for section in tqdm(stack, total=len(stack), desc=os.path.basename(stack.path), unit="section"):
                x = normalize_sections(section.astype(np.float32, copy=False))[None, None].to(self.device)
                prob = self.inferer(x, self.network)[0, 0].float().cpu().numpy()
                yield np.clip(prob, 0.0, 1.0)

    def cells(self, probabilities: TiffSections, rows: csv.DictWriter) -> Iterator[np.ndarray]:
        """Cell labels of each probability section (ids unique across the stack); table rows go to ``rows``."""
        offset = 0
        for z, prob in enumerate(probabilities):
            cells = segment_cells(prob[None], "2d", **self.segment_options)[0]
            cells = np.where(cells > 0, cells + np.uint32(offset), np.uint32(0))
            offset = int(cells.max(initial=offset))
            for row in cell_table(cells[None], "2d", probabilities.spacing):
                rows.writerow({**row, "slice": z})
            yield cells

    def segment(self, path: str) -> str:
        """Write the results of one stack; returns the path of its ``_prob.tif``."""
        stack = TiffSections(path)
        stem = os.path.join(self.output_dir, image_stem(path))
        write_tiff_sections(f"{stem}_prob.tif", self.probabilities(stack), stack.shape, np.float32)
        if self.instance_mode == "2d":
            probabilities = TiffSections(f"{stem}_prob.tif")
            probabilities.spacing = stack.spacing
            with atomic_path(f"{stem}_cells.csv") as table, open(table, "w", newline="") as f:
                rows = csv.DictWriter(f, fieldnames=COLUMNS_2D)
                rows.writeheader()
                write_tiff_sections(f"{stem}_seg.tif", self.cells(probabilities, rows), stack.shape, np.uint32)
        return f"{stem}_prob.tif"

    def run(self, paths: Sequence[str]) -> list[str]:
        """Segment every stack in ``paths``; returns their ``_prob.tif`` paths."""
        return [self.segment(str(p)) for p in paths]
