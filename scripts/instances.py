# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Cells from a membrane probability map: seeded watershed (scikit-image)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from .errors import BundleInputError
from .settings import integer, real

INSTANCE_MODES = ("2d", "3d", "none", "auto")
SEED_METHODS = ("components", "distance")
# Membrane probability below which a pixel seeds a cell. Chosen in cross-validation of membrane maps: the cells
# then score as well as the map they come from, where 0.5 merged cells (docs/experiments.md, "Cells against the map").
DEFAULT_SEED_THRESHOLD = 0.15
# Mean membrane probability of a face below which neurons' fragments merge in 3D (scripts.agglomeration); chosen on
# the three-plane map of FIB-SEM z 150-199, outside the held-out block (docs/experiments.md, "FIB-SEM and 3D neurons").
AGGLOMERATION_3D = 0.5
# inference.json's instance_mode "auto" gives a three-plane (near-isotropic) volume 3D neurons with these settings
# (the same measurement, where seed settings differed by at most 0.002 V_rand): distance-transform seeds, which a gap
# in a membrane sheet does not merge (docs/experiments.md, "3D (FIB-SEM)"), then agglomeration.
NEURONS_3D = {"seeds": "distance", "seed_threshold": 0.3, "seed_distance": 2.0, "agglomeration": AGGLOMERATION_3D}
# Other targets keep 0.5, the value their results in docs/experiments.md were measured with.
OTHER_TARGETS_SEED_THRESHOLD = 0.5
# threads for per-section post-processing: the machine's cores, capped (sections are small, threads are cheap)
SECTION_THREADS = min(8, os.cpu_count() or 1)
T = TypeVar("T")
logger = logging.getLogger(__name__)


def drop_small_regions(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask`` (bool) without its connected regions (face connectivity) of fewer than ``min_size`` pixels.

    What ``skimage.morphology.remove_small_objects`` does, written out because its size argument changed name and
    meaning in scikit-image 0.26 (``min_size`` < n kept, ``max_size`` <= n dropped) and the bundle runs on both.
    """
    labels, _ = ndimage.label(mask)
    keep = np.bincount(labels.ravel()) >= min_size
    keep[0] = False
    return keep[labels]


def _seeds(interior: np.ndarray, method: str, seed_distance: float) -> np.ndarray:
    """Label the watershed seeds inside the boolean ``interior`` mask.

    "components": each connected interior region is one seed. "distance": seeds are the maxima of the interior's
    Euclidean distance to the nearest boundary that stand out by at least ``seed_distance`` pixels (h-maxima), so a
    thin leak through a membrane does not fuse two cells into one seed (the usual distance-transform watershed of
    connectomics; it matters most in 3D, where one gap anywhere in a membrane sheet merges whole neurons).
    """
    if method == "components":
        return ndimage.label(interior)[0]
    distance = ndimage.distance_transform_edt(interior).astype(np.float32)
    peaks = h_maxima(distance, np.float32(seed_distance)).astype(bool) & interior
    return ndimage.label(peaks, structure=np.ones((3,) * interior.ndim))[0]


def _watershed(
    prob: np.ndarray,
    seed_threshold: float,
    min_seed_size: int,
    foreground: bool,
    seeds: str,
    seed_distance: float,
    agglomeration: float = 0.0,
) -> np.ndarray:
    """Seeds (see :func:`_seeds`) come from the confident cell interior ``prob < seed_threshold`` without regions
    smaller than ``min_seed_size`` pixels; they grow over the probability landscape until they meet: in a section
    ``(Y, X)``, 1-pixel boundary lines (label 0) separate them; a volume ``(Z, Y, X)`` is labelled densely. For a
    ``foreground`` map (probability of cell bodies) the roles flip and growth stays inside the objects (0 outside).
    ``agglomeration`` > 0 merges the grown regions across faces whose mean membrane probability is below it
    (``scripts.agglomeration``) before any lines are drawn."""
    boundary = 1.0 - prob if foreground else prob
    interior = boundary < seed_threshold
    if min_seed_size > 1:
        interior = drop_small_regions(interior, min_seed_size)
    markers = _seeds(interior, seeds, seed_distance)
    mask = interior if foreground else None
    if prob.ndim < 3 and not agglomeration:
        return watershed(boundary, markers, connectivity=1, watershed_line=True, mask=mask).astype(np.uint32)
    # scikit-image's watershed_line keeps re-queueing voxels: 3 M voxels of a membrane map took more than 24 GB
    # (50 x 250 x 250 FIB-SEM). Without it the flood takes 0.3 GB; the lines are drawn after it (and after the
    # agglomeration, which needs the regions to touch).
    regions = watershed(boundary, markers, connectivity=1, mask=mask).astype(np.uint32)
    if agglomeration:
        from .agglomeration import agglomerate

        regions = agglomerate(regions, boundary, agglomeration)
    # neurons in 3D are dense, as connectomics labels them (CREMI, FlyEM): a 1-voxel line between them took 9% of
    # a 10 nm FIB-SEM volume's voxels from its neurons (docs/experiments.md, "Dense neurons"); 2D cells keep the lines
    return regions if prob.ndim == 3 else boundary_lines(regions)


def boundary_lines(labels: np.ndarray) -> np.ndarray:
    """``labels`` with 0 on one side of every face between two different labels (nonzero both): the voxel after
    the face along each axis, so lines are 1 voxel thick, as scikit-image's ``watershed_line`` draws them."""
    lines = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        after = [slice(None)] * labels.ndim
        before = [slice(None)] * labels.ndim
        after[axis], before[axis] = slice(1, None), slice(None, -1)
        a, b = labels[tuple(after)], labels[tuple(before)]
        lines[tuple(after)] |= (a != b) & (a != 0) & (b != 0)
    return np.where(lines, 0, labels).astype(labels.dtype)


def default_seed_threshold(target: str, spatial_dims: int = 2) -> float:
    """inference.json's ``seed_threshold`` for ``target``: :data:`DEFAULT_SEED_THRESHOLD` for 2D membrane maps,
    :data:`OTHER_TARGETS_SEED_THRESHOLD` for cell bodies ("foreground") and 3D boundaries."""
    return DEFAULT_SEED_THRESHOLD if target == "membrane" and spatial_dims == 2 else OTHER_TARGETS_SEED_THRESHOLD


def seed_options(
    seed_threshold: object = DEFAULT_SEED_THRESHOLD,
    min_seed_size: object = 16,
    seeds: str = "components",
    seed_distance: object = 2.0,
    foreground: bool = False,
    agglomeration: object = "auto",
) -> dict:
    """The watershed settings of :func:`segment_cells` (all its arguments but ``prob`` and ``mode``), checked, for
    the writers to pass on: a bad value stops before anything is computed, with the key and a value to pass."""
    if seeds not in SEED_METHODS:
        raise BundleInputError("seeds", f"unknown value {seeds!r}", f"use one of {', '.join(SEED_METHODS)}")
    distance = real(seed_distance, "seed_distance", 2.0)
    threshold = real(seed_threshold, "seed_threshold", DEFAULT_SEED_THRESHOLD, positive=False)
    if not 0.0 < threshold < 1.0:
        problem = f"must be between 0 and 1 (a membrane probability), got {seed_threshold!r}"
        raise BundleInputError("seed_threshold", problem, f"pass e.g. --seed_threshold {DEFAULT_SEED_THRESHOLD}")
    return dict(
        seed_threshold=threshold,
        min_seed_size=integer(min_seed_size, "min_seed_size", 0, 16),
        foreground=bool(foreground),
        seeds=seeds,
        seed_distance=distance,
        agglomeration=agglomeration_threshold(agglomeration),
    )


def resolve_instance_mode(mode: str, three_planes: bool) -> str:
    """``instance_mode`` for one image: "auto" is "3d" (neurons) where the image was segmented along three planes
    (a near-isotropic volume, ``scripts.planes``), else "2d" (cells per section); other modes stand."""
    if mode != "auto":
        return mode
    return "3d" if three_planes else "2d"


def instance_options(options: dict, mode: str, requested: str) -> dict:
    """The watershed settings (:func:`seed_options`) of an image whose ``requested`` instance mode resolved to
    ``mode``: "auto" resolved to "3d" takes :data:`NEURONS_3D` (the settings measured for 3D neurons of a
    three-plane map); an explicit mode keeps the settings as given, with an ``agglomeration`` of None (the
    "auto" value) as :data:`AGGLOMERATION_3D` in 3D and off in 2D. Where waterz is missing (Python 3.10, where it
    has no wheel) an agglomeration chosen by default is dropped with a warning; one asked for stops with
    ``scripts.agglomeration``'s error."""
    by_default = options["agglomeration"] is None or requested == "auto"
    if requested == "auto" and mode == "3d" and not options["foreground"]:
        options = {**options, **NEURONS_3D}
    elif options["agglomeration"] is None:
        options = {**options, "agglomeration": AGGLOMERATION_3D if mode == "3d" else 0.0}
    if by_default and options["agglomeration"] and not agglomeration_available():
        logger.warning("waterz is not installed: 3D fragments are not agglomerated (pip install waterz)")
        options = {**options, "agglomeration": 0.0}
    return options


def agglomeration_available() -> bool:
    """Whether waterz, which agglomerates fragments (``scripts.agglomeration``), can be imported."""
    import importlib.util

    return importlib.util.find_spec("waterz") is not None


def describe_options(options: dict) -> str:
    """The watershed settings in words, for a log line."""
    seeds = f"{options['seeds']} seeds below {options['seed_threshold']:g}"
    if options["seeds"] == "distance":
        seeds += f" (h {options['seed_distance']:g})"
    merge = options.get("agglomeration") or 0.0
    return seeds + (f", fragments merged across faces below {merge:g}" if merge else "")


def agglomeration_threshold(value: object) -> float | None:
    """The ``agglomeration`` setting as a mean membrane probability in [0, 1) (0: off; "auto": None, see
    :func:`instance_options`), or a clear error."""
    if value == "auto" or value is None:
        return None
    threshold = real(value, "agglomeration", AGGLOMERATION_3D, positive=False)
    if not 0.0 <= threshold < 1.0:
        problem = f"must be in [0, 1) (a mean membrane probability; 0 turns it off), got {value!r}"
        raise BundleInputError("agglomeration", problem, f"pass e.g. --agglomeration {AGGLOMERATION_3D}")
    return threshold


def map_sections(function: Callable[[np.ndarray], T], stack: np.ndarray) -> list[T]:
    """``[function(section) for section in stack]``, computed on up to :data:`SECTION_THREADS` threads.

    The watershed and labelling release the GIL, and the network has finished with the cores by the time cells
    are computed, so sections run side by side; results come back in section order, identical to a plain loop.
    """
    if len(stack) < 2 or SECTION_THREADS < 2:
        return [function(section) for section in stack]
    with ThreadPoolExecutor(min(SECTION_THREADS, len(stack))) as pool:
        return list(pool.map(function, stack))


def segment_cells(
    prob: np.ndarray,
    mode: str = "2d",
    seed_threshold: float = DEFAULT_SEED_THRESHOLD,
    min_seed_size: int = 16,
    foreground: bool = False,
    seeds: str = "components",
    seed_distance: float = 2.0,
    agglomeration: float | None = 0.0,
) -> np.ndarray:
    """Label cells in a ``(Z, Y, X)`` membrane probability stack.

    Args:
        prob: membrane probability in [0, 1], ``(Z, Y, X)``.
        mode: "2d" labels each section on its own (anisotropic ssTEM; ids are unique across the stack),
            "3d" labels the volume at once (isotropic FIB-SEM).
        seed_threshold: pixels below it are confident cell interior and seed the watershed.
        min_seed_size: smaller interior regions (pixels or voxels) are dropped as noise.
        foreground: ``prob`` is the probability of objects (cell bodies, nuclei) rather than of membrane;
            objects are the connected regions above ``1 - seed_threshold``.
        seeds: "components" (one seed per connected interior region) or "distance" (distance-transform maxima,
            robust to small gaps in the membrane; use it for 3D).
        seed_distance: for "distance" seeds, how far (pixels) a maximum must rise above its surroundings.
        agglomeration: merge neighbouring regions whose shared face's mean membrane probability is below this
            (``scripts.agglomeration``); 0 = off.

    Returns:
        ``(Z, Y, X)`` uint32 labels 1..N: "2d" cells with 0 on the 1-pixel boundaries between them, "3d" neurons
        dense (every voxel in one; 0 only outside ``foreground`` objects).
    """
    if mode not in INSTANCE_MODES[:2]:
        raise ValueError(f"instance mode must be '2d' or '3d', got {mode!r}")
    if seeds not in SEED_METHODS:
        raise ValueError(f"seeds must be one of {SEED_METHODS}, got {seeds!r}")
    options = (seed_threshold, min_seed_size, foreground, seeds, seed_distance, agglomeration or 0.0)
    if mode == "3d":
        return _watershed(prob, *options)
    return stack_sections(map_sections(lambda section: _watershed(section, *options), prob))[0]


def stack_sections(sections: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Stack per-section labels ``(Y, X)`` into ``(Z, Y, X)`` uint32 labels with ids unique across the stack:
    each section's ids are shifted by the largest id of the sections before it. Returns the labels and each
    section's shift."""
    labels = np.zeros((len(sections), *sections[0].shape) if sections else (0,), dtype=np.uint32)
    offset, offsets = 0, []
    for z, cells in enumerate(sections):
        offsets.append(offset)
        labels[z] = np.where(cells > 0, cells + offset, 0)
        offset = int(labels[z].max(initial=offset))
    return labels, offsets


class CellBoundariesd(MapTransform):
    """Replace a membrane probability by the boundaries of the cells segmented from it, to score the cells.

    ``d[key]`` is ``(1, Y, X)`` (a section) or ``(1, Z, Y, X)`` (a stack) membrane probability; it becomes a float
    map of the same shape that is 1 on the 1-pixel lines between cells (label 0 of :func:`segment_cells`) and 0
    inside them. The ISBI metrics then score the cells that inference writes to ``_seg`` exactly as they score a
    probability map (``configs/evaluate_cells.json``).

    Args:
        keys: the probability key ("pred").
        mode: "2d" or "3d", as inference's ``instance_mode``.
        seed_threshold, min_seed_size, seeds, seed_distance: as :func:`segment_cells`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "2d",
        seed_threshold: float = DEFAULT_SEED_THRESHOLD,
        min_seed_size: int = 16,
        seeds: str = "components",
        seed_distance: float = 2.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        mode = resolve_instance_mode(mode, three_planes=False)  # "auto": scored sections are segmented as 2D
        if mode not in INSTANCE_MODES[:2]:
            raise BundleInputError("instance_mode", f"must be 2d or 3d to score cells, got {mode!r}", "pass 2d or 3d")
        self.mode = mode
        self.options = instance_options(seed_options(seed_threshold, min_seed_size, seeds, seed_distance), mode, mode)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            prob = d[key]
            array = prob.detach().float().cpu().numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob)
            stack = array[0] if array.ndim == 4 else array  # (Z, Y, X); a (1, Y, X) section is a 1-section stack
            boundaries = (segment_cells(stack, self.mode, **self.options) == 0).astype(np.float32)
            result = torch.from_numpy(boundaries.reshape(array.shape))
            d[key] = result.to(prob.device) if isinstance(prob, torch.Tensor) else result
        return d
