# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Writing inference results: ``<stem>_prob.<ext>``, ``<stem>_seg.<ext>`` and ``<stem>_cells.csv``."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .background import BackgroundJobs, worker_count
from .errors import BundleInputError, as_bool
from .inferers import MembraneInferer
from .instances import (
    DEFAULT_SEED_THRESHOLD,
    INSTANCE_MODES,
    describe_options,
    instance_options,
    map_sections,
    resolve_instance_mode,
    seed_options,
    segment_cells,
    stack_sections,
)
from .io import OUTPUT_FORMATS, PixelSize, image_stem, write_result
from .morphology import cell_table, section_rows_2d, write_cell_table
from .outputs import result_path
from .plots import save_morphology_histograms, save_overlay
from .scale import pixel_size_from_entry, table_spacing
from .settings import choice, output_folder
from .transforms import TARGETS

logger = logging.getLogger(__name__)


def _numpy(value: object) -> np.ndarray:
    """A tensor (on any device) or array as a numpy array."""
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _probability(value: object) -> np.ndarray:
    """Network output ``(1, Z, Y, X)`` (or a chunk of it) as float32 ``(Z, Y, X)`` clipped to [0, 1]."""
    return np.clip(_numpy(value)[0].astype(np.float32, copy=False), 0.0, 1.0)


def _section_cells(prob: np.ndarray, options: dict) -> tuple[np.ndarray, list[dict]]:
    """Cells (ids of this section alone) and their table rows (``area_phys`` empty: the spacing comes with the
    image, after the sections) for one ``(Y, X)`` probability section."""
    cells = segment_cells(prob[None], "2d", **options)[0]
    return cells, section_rows_2d(cells)


def _stack_rows(section_rows: list[list[dict]], offsets: list[int], spacing: list[float] | None) -> list[dict]:
    """The 2D table of a stack from the :func:`_section_cells` rows of each section, as
    ``scripts.morphology.cell_table`` makes it: ids shifted by the section's offset (``stack_sections``),
    ``slice`` = section index, ``area_phys`` from the ``(z, y, x)`` ``spacing`` (empty when it is unknown)."""
    pixel = float(spacing[1] * spacing[2]) if spacing else None
    return [
        {**row, "id": row["id"] + offset, "slice": z, "area_phys": np.float64(row["area_px"]) * pixel if pixel else ""}
        for z, (rows, offset) in enumerate(zip(section_rows, offsets))
        for row in rows
    ]


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

    With ``workers`` > 0 and the transform attached to the evaluator as a handler (:meth:`attach`), all of this
    runs on background threads while the network goes on with the next image: the call returns at once. With the
    evaluator's ``inferer`` given, the cells and table of each section start as soon as the network has finished
    that section, while it runs on the next ones (:meth:`take_sections`). Results are identical to
    the serial path (``workers`` 0): the same functions on the same arrays.

    Args:
        keys: the probability key (usually "pred").
        output_dir: folder for the results (created if missing; temporaries that killed runs left in it are
            removed here, see ``scripts.outputs.remove_stale_temporaries``).
        instance_mode: "2d" (per section), "3d" (whole volume), "none" (probability only) or "auto" ("3d" for an
            image segmented along three planes, ``image_planes`` 3, with ``scripts.instances.NEURONS_3D``'s
            settings; else "2d").
        seed_threshold: watershed seeds are regions with probability below it.
        min_seed_size: smaller seeds are ignored.
        seeds: "components" (one seed per connected interior region) or "distance" (distance-transform maxima,
            for 3D); see ``scripts.instances.segment_cells``.
        seed_distance: height (pixels) of a distance maximum that makes a seed, for "distance" seeds.
        agglomeration: merge regions across faces of mean membrane probability below it (0 off; "auto": on in 3D
            only, see ``scripts.instances.instance_options``).
        plots: also write the overlay and histogram PNGs (needs an instance mode other than "none").
        target: what the network predicts (see ``scripts.transforms.MakeTargetd``); "foreground" maps are
            segmented as objects, the others as boundaries between cells.
        output_format: "auto", "tif", "h5", "zarr" or "nii.gz" (``scripts.io.OUTPUT_FORMATS``).
        workers: post-processing threads, or "auto" (see ``scripts.background.worker_count``); 0 = in the
            caller's thread, after the network.
        device: where the network runs, for ``workers`` "auto".
        inferer: the evaluator's inferer; with background workers in mode "2d", :meth:`attach` makes this writer
            its ``section_sink``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        instance_mode: str = "2d",
        seed_threshold: float = DEFAULT_SEED_THRESHOLD,
        min_seed_size: int = 16,
        seeds: str = "components",
        seed_distance: float = 2.0,
        agglomeration: float | str = "auto",
        plots: bool = False,
        target: str = "membrane",
        output_format: str = "auto",
        workers: int | str = 0,
        device: str | torch.device = "cpu",
        inferer: MembraneInferer | None = None,
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
        self.segment_options = seed_options(
            seed_threshold, min_seed_size, seeds, seed_distance, target == "foreground", agglomeration
        )
        # the settings of a stack segmented section by section (mode "2d", or "auto" for an anisotropic stack)
        self.section_options = instance_options(self.segment_options, "2d", instance_mode)
        self.plots = as_bool(plots, "plots")
        self.output_format = choice(output_format, "output_format", OUTPUT_FORMATS)
        self.workers = worker_count(workers, device)
        self.inferer = inferer
        self.jobs: BackgroundJobs | None = None  # set by attach: background threads only with an engine to flush
        self._sections: list[tuple[np.ndarray, Future]] = []  # sections of the stack the network is on

    def attach(self, engine: Any) -> None:
        """Post-process on background threads while ``engine`` (an Ignite engine) runs, if ``workers`` > 0: all
        jobs are waited for when it completes (errors raised there, naming the file); when it fails or is
        interrupted, queued jobs are dropped and running ones finish their files."""
        from ignite.engine import Events

        if self.workers == 0:
            return
        self.jobs = BackgroundJobs(self.workers)
        if self.inferer is not None and self.instance_mode in ("2d", "auto"):
            self.inferer.section_sink = self.take_sections
        engine.add_event_handler(Events.COMPLETED, lambda _: self.jobs.wait())
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._stop)

    def _stop(self, engine: Any, error: BaseException) -> None:
        self._sections = []
        self.jobs.cancel()
        raise error

    def take_sections(self, start: int, probability: torch.Tensor) -> None:
        """Start the cells and table of sections ``start...`` of the stack the network is on; ``probability`` is
        the network's output for them, ``(1, 1, z, Y, X)``. Called by ``MembraneInferer`` (its ``section_sink``);
        a no-op unless post-processing runs in the background in mode "2d" (or "auto": sections come only from a
        stack segmented along xy alone)."""
        if self.jobs is None or self.instance_mode not in ("2d", "auto") or probability.shape[:2] != (1, 1):
            return
        if start == 0:
            self._sections = []
        for section in _probability(probability[0]):
            self._sections.append((section, self.jobs.submit(_section_cells, section, self.section_options)))

    def _claim_sections(self, prob: np.ndarray) -> list[Future]:
        """The section jobs started for ``prob`` by :meth:`take_sections`, else new ones."""
        taken, self._sections = self._sections, []
        if len(taken) == len(prob) and all(np.array_equal(section, p) for (section, _), p in zip(taken, prob)):
            return [job for _, job in taken]
        return [self.jobs.submit(_section_cells, p, self.section_options) for p in prob]

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            prob = _probability(d[key])
            source = str(d["image_path"])
            image = None
            if self.plots and self.instance_mode != "none":
                image = _numpy(d["image"])
                image = image[image.shape[0] // 2]  # the sections themselves: the middle of 2.5D channels
            pixel_size = pixel_size_from_entry(d.get("image_pixel_size"))
            mode = resolve_instance_mode(
                self.instance_mode, int(np.asarray(d.get("image_planes", 1)).reshape(-1)[0]) == 3
            )
            args = (prob, str(d["image_layout"]), source, d.get("image_spacing") or None, pixel_size, image, mode)
            if self.jobs is None:
                self._write(*args)
            else:
                if mode != "2d":
                    self._sections = []
                sections = self._claim_sections(prob) if mode == "2d" else None
                self.jobs.submit_file(source, self._write, *args, sections)
        return d

    def _write(
        self,
        prob: np.ndarray,
        layout: str,
        source: str,
        spacing: list[float] | None,
        pixel_size: PixelSize | None,
        image: np.ndarray | None,
        mode: str,
        sections: list[Future] | None = None,
    ) -> None:
        """Write every result of one image (see the class) in instance ``mode`` (resolved, not "auto");
        ``sections`` are the jobs computing its cells per section, if started already. Results keep the input's
        ``spacing`` (file units) and ``pixel_size`` (nm) where their format has a place for them; the cell table's
        physical columns are in nm (empty where the pixel size is unknown)."""
        stem = image_stem(source)
        shape = prob.shape[1:] if layout in ("yx", "xy") else prob.shape  # a 2D image stays 2D

        def write(kind: str, volume: np.ndarray) -> None:
            write_result(
                self.output_dir,
                source,
                kind,
                iter(volume),
                shape,
                volume.dtype,
                self.output_format,
                spacing,
                pixel_size,
            )

        write("_prob", prob)
        if mode == "none":
            return
        if mode == "2d":
            if sections is None:
                results = map_sections(lambda section: _section_cells(section, self.section_options), prob)
            else:
                results = [job.result() for job in sections]
            cells, offsets = stack_sections([section_cells for section_cells, _ in results])
            rows = _stack_rows([section_rows for _, section_rows in results], offsets, table_spacing(pixel_size))
        else:
            options = instance_options(self.segment_options, mode, self.instance_mode)
            logger.info("%s: cells in 3D (%s)", os.path.basename(source), describe_options(options))
            cells = segment_cells(prob, mode, **options)
            rows = cell_table(cells, mode, table_spacing(pixel_size))
        write("_seg", cells)
        write_cell_table(result_path(self.output_dir, stem, "_cells", "csv"), rows, mode)
        if image is not None:
            save_overlay(image, cells, result_path(self.output_dir, stem, "_overlay", "png"))
            size_key = "volume_px" if mode == "3d" else "area_px"
            histograms = result_path(self.output_dir, stem, "_morphology", "png")
            save_morphology_histograms(rows, histograms, size_key=size_key)
