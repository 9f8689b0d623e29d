# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Section-by-section inference for stacks larger than memory (TIFF, HDF5, NIfTI, zarr / OME-Zarr).

A 2D network sees one section at a time, and the per-section normalization, sliding window and 2D watershed
never look across sections, so streaming a stack one section at a time gives exactly the whole-volume result
while memory holds one section (plus the network), whatever the number of sections.

A near-isotropic volume segmented along three planes (``scripts.planes``) needs every section of its xz and yz
planes, which cross all of z: the normalized sections and the xy map go to two float32 scratch files in the output
folder (2 x 4 bytes per voxel, removed when the stack is done), the xz and yz sections are read back from them a few
rows at a time, and their maps added in, so memory holds a few sections of each plane, whatever the volume
(:meth:`StreamingSegmenter.three_plane_probabilities`). The map equals the whole-volume one within float rounding.

A 3D network runs on slabs of sections along z (:func:`sliding_window_planes`): the windows, their batches and
their gaussian weights are those of MONAI's whole-volume ``sliding_window_inference``, in the same order, and a
z-plane is written as soon as no later window touches it, so the probability equals the whole-volume one while
memory holds about one window depth of sections.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices, get_valid_patch_size
from monai.inferers.utils import _get_scan_interval
from monai.utils import PytorchPadMode, ensure_tuple_rep, look_up_option
from torch import nn

from .data import input_channels
from .errors import BundleInputError
from .inferers import MembraneInferer
from .instances import (
    DEFAULT_SEED_THRESHOLD,
    INSTANCE_MODES,
    describe_options,
    instance_options,
    resolve_instance_mode,
    seed_options,
    segment_cells,
)
from .io import (  # noqa: F401  (TiffSections, write_tiff_sections: re-exported for callers of this module)
    OUTPUT_FORMATS,
    OpenFileReader,
    TiffSections,
    image_stem,
    open_sections,
    require_volume,
    write_result,
    write_tiff_sections,
)
from .morphology import COLUMNS_2D, cell_table, merged_volume_rows, write_cell_table
from .outputs import atomic_path, remove_stale_temporaries, result_path
from .planes import PLANES_MODES, anisotropy_window, as_plane, from_plane, planned_volume_zoom
from .progress import Progress, counted
from .scale import ZoomPolicy, needs_resampling, pick_sections, table_spacing
from .scratch import scratch_volume
from .settings import check_device, choice, output_folder
from .slab_neurons import label_slabs, neuron_sections
from .transforms import TARGETS


def sliding_window_planes(
    read: Callable[[int, int], torch.Tensor],
    spatial_shape: Sequence[int],
    roi_size: Sequence[int],
    sw_batch_size: int,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    overlap: float = 0.25,
    mode: str = "constant",
    sigma_scale: float = 0.125,
    padding_mode: str = "constant",
    cval: float = 0.0,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """MONAI's ``sliding_window_inference`` of a ``(Z, Y, X)`` volume, computed slab by slab along z and returned
    one output z-plane at a time.

    The window grid (``_get_scan_interval``, ``dense_patch_slices``), the padding of volumes smaller than the
    window, the importance map (``compute_importance_map``), the batches of ``sw_batch_size`` consecutive windows
    and the order in which window outputs and weights are summed are those of ``monai.inferers.utils``, so each
    plane equals the matching plane of the whole-volume result (for a batch-independent ``predictor``). Windows
    run in MONAI's z-major order; only the input planes the current batch of windows needs are held, and a plane
    is yielded (divided by its weight sum) as soon as no later window touches it. Memory thus scales with
    ``roi_size[0]`` (plus the z-steps one batch spans) times the plane size, not with ``Z``.

    Args:
        read: ``read(start, stop)`` returns input planes ``start .. stop - 1`` of the volume as a float32
            ``(1, C, stop - start, Y, X)`` tensor on ``device``.
        spatial_shape: ``(Z, Y, X)``.
        roi_size: ``(z, y, x)`` window size.
        sw_batch_size: windows per ``predictor`` call.
        predictor: ``(B, C, *roi_size) -> (B, C_out, *roi_size)``.
        overlap, mode, sigma_scale, padding_mode, cval: as in ``monai.inferers.sliding_window_inference``.
        device: where windows are cut and outputs are summed (MONAI's ``sw_device`` and ``device``).

    Yields:
        ``(C_out, Y, X)`` float32 planes for ``z = 0 .. Z - 1``.
    """
    shape, roi = tuple(int(s) for s in spatial_shape), tuple(int(r) for r in roi_size)
    if len(shape) != 3 or len(roi) != 3:
        raise ValueError(f"expected a (Z, Y, X) volume and window, got {shape} and {roi}")
    image_size = tuple(max(s, r) for s, r in zip(shape, roi))
    pad_size: list[int] = []  # F.pad order: (x_before, x_after, y_before, y_after, z_before, z_after)
    for s, r in zip(reversed(shape), reversed(roi)):
        diff = max(r - s, 0)
        pad_size += [diff // 2, diff - diff // 2]
    pad_mode = look_up_option(padding_mode, PytorchPadMode)
    z_padded = bool(pad_size[4] or pad_size[5])  # then one window depth covers the whole (padded) volume

    def padded(start: int, stop: int) -> torch.Tensor:
        """Planes ``start .. stop - 1`` of the padded volume, ``(1, C, stop - start, Y + pad, X + pad)``."""
        x = read(0, shape[0]) if z_padded else read(start, stop)
        if any(pad_size):
            x = F.pad(x, pad=pad_size, mode=pad_mode, value=cval)
        return x[:, :, start:stop] if z_padded else x

    windows = dense_patch_slices(image_size, roi, _get_scan_interval(image_size, roi, 3, ensure_tuple_rep(overlap, 3)))
    weight = compute_importance_map(
        get_valid_patch_size(image_size, roi), mode=mode, sigma_scale=sigma_scale, device=device, dtype=torch.float32
    )[None, None]
    crop = (slice(pad_size[2], pad_size[2] + shape[1]), slice(pad_size[0], pad_size[0] + shape[2]))
    source: torch.Tensor | None = None  # input planes source_lo .. (padded z)
    total: torch.Tensor | None = None  # weighted sum of the output planes out_lo ..
    weights: torch.Tensor | None = None  # their weight sum
    source_lo = out_lo = 0
    for first in range(0, len(windows), int(sw_batch_size)):
        batch = windows[first : first + int(sw_batch_size)]
        lo, hi = batch[0][0].start, max(w[0].stop for w in batch)  # windows come in increasing z order
        source_hi = source_lo if source is None else source_lo + source.shape[2]
        if source is None or lo >= source_hi:
            source = padded(lo, hi)
        else:
            source = source[:, :, lo - source_lo :]
            if hi > source_hi:
                source = torch.cat([source, padded(source_hi, hi)], dim=2)
        source_lo = lo
        crops = [source[(slice(None), slice(None), slice(w[0].start - lo, w[0].stop - lo), *w[1:])] for w in batch]
        prob = predictor(torch.cat(crops) if sw_batch_size > 1 else crops[0]) * weight  # as MONAI batches them
        if total is None or weights is None:
            total = torch.zeros((1, prob.shape[1], 0, *image_size[1:]), dtype=prob.dtype, device=device)
            weights = torch.zeros((1, 1, 0, *image_size[1:]), dtype=weight.dtype, device=device)
        if hi > out_lo + total.shape[2]:
            extra = hi - out_lo - total.shape[2]
            total = torch.cat([total, total.new_zeros((*total.shape[:2], extra, *total.shape[3:]))], dim=2)
            weights = torch.cat([weights, weights.new_zeros((1, 1, extra, *weights.shape[3:]))], dim=2)
        for w, p in zip(batch, prob.to(device)):
            planes = (slice(None), slice(None), slice(w[0].start - out_lo, w[0].stop - out_lo), *w[1:])
            total[planes] += p
            weights[planes] += weight
        following = windows[first + len(batch)][0].start if first + len(batch) < len(windows) else image_size[0]
        if following > out_lo:  # no later window touches the planes before `following`
            done = total[0, :, : following - out_lo] / weights[0, :, : following - out_lo]
            for i in range(done.shape[1]):
                if 0 <= out_lo + i - pad_size[4] < shape[0]:
                    yield done[(slice(None), i, *crop)]
            total, weights = total[:, :, following - out_lo :], weights[:, :, following - out_lo :]
            out_lo = following


logger = logging.getLogger(__name__)

#: Pixels of xz (or yz) sections read back from the scratch files at a time (64 MB of float32): a few rows of a
#: large volume, all of a small one.
SCRATCH_CHUNK_PIXELS = 1 << 24


class StreamingSegmenter:
    """``configs/inference_stream.json``: the outputs of ``configs/inference.json``, a few sections at a time, so
    that stacks of any length fit in memory.

    For every stack ``X`` it writes ``X_prob.<ext>`` (float32 membrane probability), ``X_seg.<ext>`` (uint32
    cells, per-section watershed) and ``X_cells.csv`` with the writer of whole-volume inference, identical to its
    results (the overlay plots, which need the whole stack, are not drawn). The probability is written first and
    segmented in a second pass over it. A 2D network runs one section at a time; a 3D network
    (``configs/inference_3d.json``) runs on overlapping slabs of sections with the windows and blending of
    whole-volume inference (:func:`sliding_window_planes`), holding about one window depth of sections. A
    near-isotropic volume (``planes``) is segmented along xy, xz and yz by a 2D network, through scratch files
    (:meth:`three_plane_probabilities`), and ``instance_mode`` auto makes 3D neurons of it slab by slab
    (``scripts.slab_neurons``, through a uint32 scratch file).

    Args:
        network: a 2D or 3D network (eval mode is set here).
        inferer: the sliding-window inferer of inference.json.
        output_dir: folder for the results.
        device: where the network runs.
        instance_mode: "2d" (cells per section), "3d" (neurons, slab by slab), "none", or "auto" ("3d" for a volume
            segmented along three planes, else "2d"), as ``inference.json``.
        seed_threshold, min_seed_size, seeds, seed_distance, agglomeration: watershed seeds and the merging of 3D
            fragments, see ``scripts.instances`` ("auto": as whole-volume inference).
        target: "foreground" maps are segmented as objects (see ``scripts.writers.SaveEMResultsd``).
        output_format: "auto", "tif", "h5" (``X_prob.h5`` with dataset ``prob``, one section per chunk), "zarr"
            (OME-Zarr) or "nii.gz"; the writer of whole-volume inference (``scripts.io.write_result``).
        context_sections: neighbouring sections on each side a 2.5D network takes as extra channels.
        zoom_policy: chooses each stack's zoom (``scripts.scale.ZoomPolicy``, inference.json's ``zoom_policy``)
            from its pixel size and a few of its sections; None runs the network on the input's own grid.
        planes: "auto" (three planes for a near-isotropic volume), "xy" or "xyz" (``scripts.planes``).
    """

    def __init__(
        self,
        network: nn.Module,
        inferer: MembraneInferer,
        output_dir: str,
        device: torch.device | str = "cpu",
        instance_mode: str = "2d",
        seed_threshold: float = DEFAULT_SEED_THRESHOLD,
        min_seed_size: int = 16,
        seeds: str = "components",
        seed_distance: float = 2.0,
        target: str = "membrane",
        output_format: str = "auto",
        context_sections: int = 0,
        zoom_policy: ZoomPolicy | None = None,
        planes: str = "auto",
        agglomeration: object = "auto",
    ) -> None:
        self.planes = choice(planes, "planes", PLANES_MODES)
        self.instance_mode = choice(instance_mode, "instance_mode", INSTANCE_MODES)
        self.network, self.inferer, self.device = network.eval(), inferer, check_device(device)
        self.output_dir = output_folder(output_dir)
        self.output_format = choice(output_format, "output_format", OUTPUT_FORMATS)
        target = choice(target, "target", TARGETS)
        self.segment_options = seed_options(
            seed_threshold, min_seed_size, seeds, seed_distance, target == "foreground", agglomeration
        )
        self.context_sections = input_channels(context_sections, inferer.spatial_dims) // 2
        self.zoom_policy = zoom_policy
        remove_stale_temporaries(self.output_dir)

    def choose_scale(self, stack: OpenFileReader) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """The zoom of one stack (``scripts.scale.ZoomPolicy``) from its pixel size and a few of its sections, each
        read and normalized as inference reads it (neighbours as channels for a 2.5D network), and the planes it
        is segmented along (``scripts.planes.choose_planes``, logged as whole-volume inference logs them).

        Returns:
            the zoom (None: the stack's own grid) and, for three planes, the ``(z, y, x)`` zoom of the volume.
        """
        from .transforms import normalize_sections

        name = os.path.basename(stack.path)

        def planned(zoom: Sequence[float] | None, pixel_size_nm: Sequence[float | None] | None) -> tuple | None:
            dims, context = self.inferer.spatial_dims, self.context_sections
            return planned_volume_zoom(
                name, self.planes, zoom, pixel_size_nm, len(stack), dims, context, anisotropy_sections
            )

        def anisotropy_sections() -> np.ndarray:
            z, y, x = anisotropy_window((len(stack), *stack.shape[-2:]))
            with stack:
                return stack.read(z.start, z.stop)[:, y, x]

        if self.zoom_policy is None:
            return None, planned(None, getattr(stack.pixel_size, "nm", None))

        def sections() -> torch.Tensor:
            c = self.context_sections
            picked = []
            with stack:
                for z in pick_sections(len(stack)):
                    index = np.clip(np.arange(z - c, z + c + 1), 0, len(stack) - 1)
                    picked.append(normalize_sections(np.stack([stack.read(int(i), int(i) + 1)[0] for i in index])))
            return torch.stack(picked).float()  # (n, 2c + 1, Y, X)

        usable = sections if self.inferer.spatial_dims == 2 else None
        choice_ = self.zoom_policy.choose(name, usable, stack.pixel_size)
        return choice_.zoom, planned(choice_.zoom, choice_.pixel_size_nm)

    def probabilities(self, stack: OpenFileReader, zoom: Sequence[float] | None = None) -> Iterator[np.ndarray]:
        """Membrane probability of each section, ``(Y, X)`` float32 in [0, 1], the network run at ``zoom``
        (``scripts.inferers.MembraneInferer``)."""
        from .transforms import normalize_sections

        if self.inferer.spatial_dims == 3:
            if needs_resampling(zoom):
                raise BundleInputError(
                    stack.path,
                    f"needs zoom {tuple(round(z, 3) for z in zoom)} for the model's pixel size, which streaming a 3D "
                    "network does not resample",
                    "segment it with configs/inference.json (whole volume), resample it first, or pass --zoom 1",
                )
            yield from self.volume_probabilities(stack)
            return
        if self.context_sections:
            yield from self.context_probabilities(stack, zoom)
            return
        with torch.inference_mode():
            for section in stack:
                x = normalize_sections(section.astype(np.float32, copy=False))[None, None].to(self.device)
                prob = self.inferer(x, self.network, zoom=zoom)[0, 0].float().cpu().numpy()
                yield np.clip(prob, 0.0, 1.0)

    def three_plane_probabilities(
        self, stack: OpenFileReader, volume_zoom: Sequence[float], progress: Progress
    ) -> Iterator[np.ndarray]:
        """Membrane probability of each section, ``(Y, X)`` float32 in [0, 1]: the mean of the 2D network's maps
        along xy, xz and yz (``scripts.planes``), each plane at its zoom from ``volume_zoom`` ``(z, y, x)``, as
        ``MembraneInferer`` computes it on the whole volume. The xy pass goes section by section and leaves the
        normalized sections and its map in scratch files (:func:`scratch_volume`); the xz and yz passes read their
        sections back a few rows at a time (:data:`SCRATCH_CHUNK_PIXELS`) and add their maps. ``progress`` counts
        the sections of every plane."""
        from .transforms import normalize_sections

        depth, height, width = stack.shape
        stem = image_stem(stack.path)
        predictor = self.inferer.predictor(self.network, self.device)

        def plane_map(sections: torch.Tensor, plane: str) -> np.ndarray:
            """The map of ``sections`` ``(Z, Y', X')`` (a part of the volume) along ``plane``, on the same axes."""
            block = as_plane(sections[None, None].to(self.device), plane).contiguous()
            prob = self.inferer.plane_probability(block, predictor, volume_zoom, plane)
            progress.update(block.shape[2])
            return from_plane(prob, plane)[0, 0].float().cpu().numpy()

        progress.start(depth + height + width, "section")
        with scratch_volume(self.output_dir, stem, stack.shape) as inputs, scratch_volume(
            self.output_dir, stem, stack.shape
        ) as total, torch.inference_mode(), stack:
            for z in range(depth):
                inputs[z] = normalize_sections(stack.read(z, z + 1).astype(np.float32, copy=False)).numpy()
                total[z] = plane_map(torch.from_numpy(inputs[z : z + 1]), "xy")[0]
            for plane, axis in (("xz", 1), ("yz", 2)):
                step = max(1, SCRATCH_CHUNK_PIXELS // (depth * (width if axis == 1 else height)))
                for start in range(0, stack.shape[axis], step):
                    rows = slice(start, start + step)
                    part = (slice(None), rows) if axis == 1 else (slice(None), slice(None), rows)
                    total[part] += plane_map(torch.from_numpy(inputs[part]), plane)
            for z in range(depth):
                yield np.clip(total[z] / 3, 0.0, 1.0)

    def context_probabilities(self, stack: OpenFileReader, zoom: Sequence[float] | None = None) -> Iterator[np.ndarray]:
        """Membrane probability of each section from a 2.5D network, ``(Y, X)`` float32 in [0, 1]: each section
        with its ``context_sections`` neighbours on either side as channels, read a few sections at a time and
        built exactly as whole-volume inference builds them (``scripts.transforms.NeighbourSectionsd``). Each
        section is read and normalized once (normalization is per section), and kept while a neighbour needs it."""
        from .transforms import normalize_sections

        n, c = len(stack), self.context_sections
        window: dict[int, torch.Tensor] = {}  # normalized sections z - c .. z + c
        with torch.inference_mode(), stack:
            for z in range(n):
                start, stop = max(0, z - c), min(n, z + c + 1)
                first = max(start, max(window, default=-1) + 1)  # the sections new to the window
                if first < stop:
                    fresh = normalize_sections(stack.read(first, stop).astype(np.float32, copy=False))
                    window.update({first + i: section for i, section in enumerate(fresh)})
                for old in [k for k in window if k < start]:
                    del window[old]
                index = np.clip(np.arange(z - c, z + c + 1), 0, n - 1)
                x = torch.stack([window[int(i)] for i in index])[None].to(self.device)
                yield np.clip(self.inferer(x, self.network, zoom=zoom)[0, 0].float().cpu().numpy(), 0.0, 1.0)

    def volume_probabilities(self, stack: OpenFileReader) -> Iterator[np.ndarray]:
        """Membrane probability of each section from a 3D network, ``(Y, X)`` float32 in [0, 1]: the whole-volume
        sliding window of ``MembraneInferer`` (window shrink, padding, batches, TTA, precision), slab by slab."""
        from .transforms import normalize_sections

        require_volume(stack.path, stack.shape)

        def read(start: int, stop: int) -> torch.Tensor:
            sections = stack.read(start, stop).astype(np.float32, copy=False)
            return normalize_sections(sections)[None, None].to(self.device)

        roi, kwargs = self.inferer.window_settings(stack.shape, self.device)
        predictor = self.inferer.predictor(self.network, self.device)
        with torch.inference_mode(), stack:
            planes = sliding_window_planes(read, stack.shape, roi, predictor=predictor, device=self.device, **kwargs)
            for plane in planes:
                yield np.clip(plane[0].float().cpu().numpy(), 0.0, 1.0)

    def cells(self, probabilities: OpenFileReader, rows: csv.DictWriter) -> Iterator[np.ndarray]:
        """Cell labels of each probability section (ids unique across the stack); table rows go to ``rows``."""
        offset = 0
        for z, prob in enumerate(probabilities):
            cells = segment_cells(prob[None], "2d", **self.segment_options)[0]
            cells = np.where(cells > 0, cells + np.uint32(offset), np.uint32(0))
            offset = int(cells.max(initial=offset))
            for row in cell_table(cells[None], "2d", table_spacing(probabilities.pixel_size)):
                rows.writerow({**row, "slice": z})
            yield cells

    def segment(self, path: str) -> str:
        """Write the results of one stack; returns the path of its ``_prob`` file."""
        stack = open_sections(path)
        stem = image_stem(path)
        results = dict(
            shape=stack.shape, output_format=self.output_format, spacing=stack.spacing, pixel_size=stack.pixel_size
        )
        name = os.path.basename(path)
        zoom, three_planes = self.choose_scale(stack)
        if three_planes is not None:
            progress = Progress(name)
            sections = self.three_plane_probabilities(stack, three_planes, progress)
        else:
            sections = counted(self.probabilities(stack, zoom), len(stack), name)  # a bar of the sections done
        prob_path = write_result(self.output_dir, path, "_prob", sections, dtype=np.float32, **results)
        mode = resolve_instance_mode(self.instance_mode, three_planes=three_planes is not None)
        if mode == "3d":
            self.write_neurons(path, prob_path, stack, results)
        elif mode == "2d":
            probabilities = open_sections(prob_path)
            probabilities.spacing, probabilities.pixel_size = stack.spacing, stack.pixel_size
            with atomic_path(result_path(self.output_dir, stem, "_cells", "csv")) as table, open(
                table, "w", newline=""
            ) as f:
                rows = csv.DictWriter(f, fieldnames=COLUMNS_2D)
                rows.writeheader()
                cells = counted(self.cells(probabilities, rows), len(stack), f"{name}: cells")
                write_result(self.output_dir, path, "_seg", cells, dtype=np.uint32, **results)
        return prob_path

    def write_neurons(self, path: str, prob_path: str, stack: OpenFileReader, results: dict) -> None:
        """``_seg`` and ``_cells.csv`` of 3D neurons from the written probability ``prob_path``, slab by slab
        (``scripts.slab_neurons``); ``results`` are the writer's settings of ``stack``'s results."""
        options = instance_options(self.segment_options, "3d", self.instance_mode)
        name, stem = os.path.basename(path), image_stem(path)
        logger.info("%s: cells in 3D (%s)", name, describe_options(options))
        table: list[dict] = []
        with scratch_volume(
            self.output_dir, stem, stack.shape, np.uint32, "3D neurons", "pass --instance_mode 2d"
        ) as labels:
            slabs, offsets, lookup = label_slabs(open_sections(prob_path), labels, options)
            sections = counted(neuron_sections(labels, slabs, offsets, lookup, table), len(stack), f"{name}: neurons")
            write_result(self.output_dir, path, "_seg", sections, dtype=np.uint32, **results)
        rows = merged_volume_rows(table, table_spacing(stack.pixel_size))
        write_cell_table(result_path(self.output_dir, stem, "_cells", "csv"), rows, "3d")

    def run(self, paths: Sequence[str]) -> list[str]:
        """Segment every stack in ``paths``; returns their ``_prob`` file paths."""
        return [self.segment(str(p)) for p in paths]
