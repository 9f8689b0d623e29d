# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Which planes a 2D network segments a volume along, and the three-plane average.

A near-isotropic volume (FIB-SEM, SBEM with thin sections: z spacing within :data:`ISOTROPY_RATIO` of the x/y
spacing) looks alike along z, y and x, so the 2D network also runs on its xz and yz sections and the three membrane
maps are averaged: a membrane that one plane sees edge-on (sharp) another sees at a slant (blurred), and the average
keeps the evidence of both. An ssTEM stack (50 nm sections of 4 nm pixels) has no usable xz/yz view: xy only.

``planes`` (inference.json): "auto" (default: three planes where the pixel size says the volume is near-isotropic,
else xy), "xy", or "xyz" (three planes; refused for a volume known to be anisotropic, which would need its z
resampled many-fold). Where the file does not state its z spacing, "auto" reads the volume's anisotropy off the
image (:func:`image_anisotropy`). One log line per image says which ran and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import BundleInputError
from .settings import choice

logger = logging.getLogger(__name__)
PLANES_MODES = ("auto", "xy", "xyz")
#: A volume is near-isotropic where its z spacing is at most this many times its x/y spacing (and at least its
#: inverse): FIB-SEM at 4-10 nm (ratio 1), SBEM at 8 x 8 x 12 nm (1.5). ssTEM at 50 x 4 x 4 nm (12.5) is not.
ISOTROPY_RATIO = 1.5
#: The three planes of a ``(Z, Y, X)`` volume: the permutation of ``(B, C, Z, Y, X)`` that puts each plane's sections
#: on axis 2, and the volume axes ``(z, y, x)`` = 0, 1, 2 that lie within its sections (for their zoom).
PLANE_PERMUTATIONS = {"xy": (0, 1, 2, 3, 4), "xz": (0, 1, 3, 2, 4), "yz": (0, 1, 4, 2, 3)}
PLANE_AXES = {"xy": (1, 2), "xz": (0, 2), "yz": (0, 1)}
#: Where the z spacing is unknown, the anisotropy is read off this many consecutive sections from the middle of the
#: volume, within a centre crop of at most this many pixels a side; volumes of fewer sections stay xy.
ANISOTROPY_SECTIONS, ANISOTROPY_CROP, ANISOTROPY_MIN_SECTIONS = 16, 512, 8
#: :func:`image_anisotropy` at or below which a volume of unknown z spacing counts as near-isotropic. Measured
#: (docs/experiments.md, "Planes without a z spacing"): the 10 nm FIB-SEM cube 0.92-1.36; with every 2nd / 3rd
#: section 2.5 / 3.6; ISBI 2012 ssTEM (50 x 4 x 4 nm) 10.3, binned 4x in x/y (z 3.1x x/y) 2.6, binned 8x (1.56x)
#: 1.4; noise of 40 grey levels moves none of them by more than 0.13.
IMAGE_ISOTROPY_RATIO = 1.6
#: the largest in-section distance (pixels) :func:`image_anisotropy` compares a neighbouring section with
ANISOTROPY_MAX_LAG = 32
#: neighbouring sections correlated less than this share no structure to judge by (noise, unrelated images)
ANISOTROPY_MIN_CORRELATION = 0.05


def anisotropy(pixel_size_nm: Sequence[float | None] | None) -> float | None:
    """z spacing over the mean x/y spacing of a ``(z, y, x)`` nm pixel size; None where z (or all) is unknown."""
    if pixel_size_nm is None or pixel_size_nm[0] is None:
        return None
    z, y, x = (float(v) for v in pixel_size_nm)  # type: ignore[arg-type]
    return z / ((y * x) ** 0.5)


def is_isotropic(pixel_size_nm: Sequence[float | None] | None) -> bool:
    """Whether a ``(z, y, x)`` nm pixel size is near-isotropic (:data:`ISOTROPY_RATIO`); False where z is unknown."""
    ratio = anisotropy(pixel_size_nm)
    return ratio is not None and 1.0 / ISOTROPY_RATIO <= ratio <= ISOTROPY_RATIO


def anisotropy_window(shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """The part of a ``(Z, Y, X)`` volume :func:`image_anisotropy` reads: up to :data:`ANISOTROPY_SECTIONS`
    consecutive sections from the middle, within a centre crop of up to :data:`ANISOTROPY_CROP` pixels a side."""

    def centred(size: int, wanted: int) -> slice:
        start = max(0, (size - wanted) // 2)
        return slice(start, min(size, start + wanted))

    return (
        centred(shape[0], ANISOTROPY_SECTIONS),
        centred(shape[1], ANISOTROPY_CROP),
        centred(shape[2], ANISOTROPY_CROP),
    )


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def image_anisotropy(sections: np.ndarray) -> float:
    """How many pixels apart within a section two pixels are as alike as a pixel and its neighbour in the next
    section, for ``(n, Y, X)`` consecutive sections (n >= 2): about the z spacing over the x/y spacing (FIB-SEM about
    1, ssTEM at 50 x 4 x 4 nm about 10; at most :data:`ANISOTROPY_MAX_LAG`).

    Each section is standardized (brightness and contrast may drift from section to section); the correlation
    between neighbouring sections is matched against the correlation at in-section distance ``d`` (mean of y and
    x), linearly between whole pixels. White noise lowers every correlation at a distance by the same factor, so
    the match, unlike a ratio of gradients, does not move with the noise. Sections that share (almost) nothing
    (:data:`ANISOTROPY_MIN_CORRELATION`) give :data:`ANISOTROPY_MAX_LAG`.
    """
    a = np.asarray(sections, dtype=np.float32)
    a = a - a.mean(axis=(1, 2), keepdims=True)
    a = a / np.maximum(a.std(axis=(1, 2), keepdims=True), 1e-6)
    between = _correlation(a[1:], a[:-1])
    if between < ANISOTROPY_MIN_CORRELATION:
        return float(ANISOTROPY_MAX_LAG)
    within = [1.0]
    for d in range(1, min(ANISOTROPY_MAX_LAG, min(a.shape[1:]) - 1) + 1):
        within.append((_correlation(a[:, d:], a[:, :-d]) + _correlation(a[:, :, d:], a[:, :, :-d])) / 2)
        if within[d] <= between:
            return d - 1 + (within[d - 1] - between) / max(within[d - 1] - within[d], 1e-12)
    return float(ANISOTROPY_MAX_LAG)


@dataclass(frozen=True)
class PlaneChoice:
    """The planes one image is segmented along, and why (for its log line)."""

    planes: tuple[str, ...]
    reason: str

    @property
    def three(self) -> bool:
        return len(self.planes) == 3


def choose_planes(
    mode: str,
    pixel_size_nm: Sequence[float | None] | None,
    sections: int,
    spatial_dims: int = 2,
    read: Callable[[], np.ndarray] | None = None,
) -> PlaneChoice:
    """The planes of an image of ``sections`` sections with pixel size ``pixel_size_nm`` (``(z, y, x)`` nm, z or
    all None where unknown) for ``planes`` ``mode`` (see the module docstring). A 3D network, or a single section,
    has one "plane" (xy). Where the z spacing is unknown, "auto" judges the image (:func:`image_anisotropy`) by
    ``read()``, the volume's :func:`anisotropy_window` as ``(n, Y, X)``; without ``read`` such a volume stays xy."""
    mode = choice(mode, "planes", PLANES_MODES)
    if spatial_dims == 3:
        return PlaneChoice(("xy",), "a 3D network sees the volume whole")
    if sections < 2:
        return PlaneChoice(("xy",), "a single section")
    ratio = anisotropy(pixel_size_nm)
    if mode == "xy":
        return PlaneChoice(("xy",), "--planes xy")
    if mode == "xyz":
        if ratio is not None and not is_isotropic(pixel_size_nm):
            raise BundleInputError(
                "planes",
                f"is xyz, but the volume's z spacing is {ratio:.3g}x its x/y spacing (three planes need a "
                f"near-isotropic volume, at most {ISOTROPY_RATIO}x)",
                "pass --planes xy (or auto), or --pixel_size [z, y, x] if the file's pixel size is wrong",
            )
        return PlaneChoice(("xy", "xz", "yz"), "--planes xyz")
    if ratio is None:
        return _planes_by_image(sections, read)
    if is_isotropic(pixel_size_nm):
        return PlaneChoice(("xy", "xz", "yz"), f"near-isotropic: z spacing {ratio:.3g}x x/y")
    return PlaneChoice(("xy",), f"anisotropic: z spacing {ratio:.3g}x x/y")


def _planes_by_image(sections: int, read: Callable[[], np.ndarray] | None) -> PlaneChoice:
    """The planes "auto" gives a volume of unknown z spacing: three where its image looks near-isotropic."""
    if read is None or sections < ANISOTROPY_MIN_SECTIONS:
        return PlaneChoice(("xy",), "z spacing unknown; pass --pixel_size [z, y, x] or --planes xyz for three planes")
    estimate = image_anisotropy(read())
    three = estimate <= IMAGE_ISOTROPY_RATIO
    return PlaneChoice(
        ("xy", "xz", "yz") if three else ("xy",),
        f"z spacing unknown; the image looks {'near-isotropic' if three else 'anisotropic'}: neighbouring sections "
        f"are as alike as pixels {estimate:.2f} apart within one (three planes up to {IMAGE_ISOTROPY_RATIO}); pass "
        "--pixel_size [z, y, x] to decide by the pixel size, or --planes " + ("xy" if three else "xyz"),
    )


def planned_volume_zoom(
    name: str,
    mode: str,
    zoom: Sequence[float] | None,
    pixel_size_nm: Sequence[float | None] | None,
    sections: int,
    spatial_dims: int = 2,
    context_sections: int = 0,
    read: Callable[[], np.ndarray] | None = None,
) -> tuple[float, float, float] | None:
    """The planes of one volume of ``sections`` sections (:func:`choose_planes`, ``read`` as there), logged in one
    line as whole-volume inference logs them; returns the volume's ``(z, y, x)`` zoom (:func:`volume_zoom` of the 2D
    ``zoom``, None = 1) where they are three, else None. Streamed and Dask blockwise inference plan here. A 2.5D
    network (``context_sections`` > 0) takes its z-neighbours as channels of xy sections: xy only."""
    if context_sections:
        logger.info("%s: planes xy (a 2.5D network takes its z-neighbours as channels)", name)
        return None
    planes = choose_planes(mode, pixel_size_nm, sections, spatial_dims, read)
    logger.info("%s: planes %s (%s)", name, ", ".join(planes.planes), planes.reason)
    return volume_zoom(zoom or (1.0, 1.0), pixel_size_nm) if planes.three else None


def plane_zoom(volume_zoom: Sequence[float], plane: str) -> tuple[float, float]:
    """The 2D zoom of ``plane``'s sections from a volume's ``(z, y, x)`` zoom."""
    a, b = PLANE_AXES[plane]
    return float(volume_zoom[a]), float(volume_zoom[b])


def volume_zoom(zoom: Sequence[float], pixel_size_nm: Sequence[float | None] | None) -> tuple[float, float, float]:
    """The ``(z, y, x)`` zoom of a volume whose sections run at the 2D ``zoom`` ``(y, x)``: the model's pixel is
    square and its size in nm along z is its size along y, so z zooms by ``zoom_y * z_nm / y_nm`` (the mean of the
    two where the z spacing is unknown, as for a volume taken to be isotropic)."""
    zy, zx = float(zoom[0]), float(zoom[1])
    if pixel_size_nm is None or pixel_size_nm[0] is None:
        return ((zy * zx) ** 0.5, zy, zx)
    return (zy * float(pixel_size_nm[0]) / float(pixel_size_nm[1]), zy, zx)  # type: ignore[arg-type]


def as_plane(x: torch.Tensor, plane: str) -> torch.Tensor:
    """``(B, C, Z, Y, X)`` as ``plane``'s sections along axis 2 (a view)."""
    return x.permute(*PLANE_PERMUTATIONS[plane])


def from_plane(x: torch.Tensor, plane: str) -> torch.Tensor:
    """The inverse of :func:`as_plane`."""
    order = PLANE_PERMUTATIONS[plane]
    return x.permute(*[order.index(axis) for axis in range(5)])


def plane_average(
    inputs: torch.Tensor, planes: Sequence[str], run_plane: Callable[[torch.Tensor, str], torch.Tensor]
) -> torch.Tensor:
    """The mean over ``planes`` of ``run_plane(sections, plane)``, each computed on ``inputs`` ``(B, C, Z, Y, X)``
    cut along that plane (:func:`as_plane`) and put back on the volume's axes; summed in place, so the peak is the
    volume, the running sum and one plane's result."""
    total: torch.Tensor | None = None
    for plane in planes:
        prob = from_plane(run_plane(as_plane(inputs, plane).contiguous(), plane), plane)
        total = prob.clone() if total is None else total.add_(prob)
    assert total is not None
    return total.div_(len(planes))
