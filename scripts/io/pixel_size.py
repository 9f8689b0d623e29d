# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The physical pixel size of an image, in nanometres, and where it came from.

Every format states its pixel size in its own unit (TIFF: pixels per centimetre or inch; ImageJ: a ``unit`` word;
OME: ``PhysicalSizeXUnit``; NIfTI: ``xyzt_units``; OME-Zarr: the axes' ``unit``; MRC: Angstrom). The format modules
turn what their files say into a :class:`PixelSize` with the helpers here, so that a file that says nothing, or
only what a screen or printer default says, gives None rather than a number that means nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Nanometres per unit, for the unit words and symbols the formats use (keys lower case; OME symbols, UDUNITS-2
#: names as OME-Zarr uses them, ImageJ's words, NIfTI's xyzt_units names).
UNIT_NM: dict[str, float] = {
    **dict.fromkeys(("pm", "picometer", "picometre"), 1e-3),
    **dict.fromkeys(("å", "\u212b", "angstrom", "angstroms", "ångström"), 0.1),
    **dict.fromkeys(("nm", "nanometer", "nanometre", "nanometers", "nanometres"), 1.0),
    **dict.fromkeys(
        ("µm", "\u03bcm", "um", "micron", "microns", "micrometer", "micrometre", "micrometers", "micrometres"), 1e3
    ),
    **dict.fromkeys(("mm", "millimeter", "millimetre", "millimeters", "millimetres"), 1e6),
    **dict.fromkeys(("cm", "centimeter", "centimetre", "centimeters", "centimetres"), 1e7),
    **dict.fromkeys(("m", "meter", "metre", "meters", "metres"), 1e9),
    **dict.fromkeys(("in", "inch", "inches"), 2.54e7),
}
#: Resolutions that image programs write when they know nothing of the pixel size (screen and print defaults), in
#: dots per inch; a TIFF saying one of these (in inches, or its equivalent in centimetres) has no pixel size.
SCREEN_DPI = (72.0, 96.0, 150.0, 300.0)


@dataclass(frozen=True)
class PixelSize:
    """An image's pixel size in nanometres.

    Attributes:
        nm: ``(z, y, x)`` in nanometres; ``z`` is None where the file says nothing about the section spacing (a 2D
            image, a TIFF with resolution tags only).
        source: where it came from, in words for the log, e.g. "TIFF resolution tags (cm)", "ImageJ unit 'micron'",
            "MRC voxel size (Angstrom)".
    """

    nm: tuple[float | None, float, float]
    source: str

    @property
    def yx(self) -> tuple[float, float]:
        """``(y, x)`` in nanometres."""
        return (self.nm[1], self.nm[2])

    def __str__(self) -> str:
        z, y, x = self.nm
        text = f"{y:.4g} x {x:.4g} nm" + ("" if z is None else f", sections {z:.4g} nm apart")
        return f"{text} ({self.source})"


def unit_nm(unit: object) -> float | None:
    """Nanometres per ``unit`` (a word or symbol of :data:`UNIT_NM`; ImageJ's escaped ``\\u00B5m`` too), or None
    for no unit or one that is no length ("pixel", "", "unknown")."""
    if not isinstance(unit, str):
        return None
    word = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").lower()
    return UNIT_NM.get(word)


def _length(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def make_pixel_size(
    zyx: Sequence[object], per_unit_nm: float | None, source: str, z_per_unit_nm: float | None = None
) -> PixelSize | None:
    """A :class:`PixelSize` from ``(z, y, x)`` (or ``(y, x)``) lengths in a unit of ``per_unit_nm`` nanometres
    (``z_per_unit_nm`` for ``z`` where its unit differs); None when the unit is unknown or ``y``/``x`` is not a
    positive finite number. A ``z`` that is missing, zero or not a number becomes None."""
    values = list(zyx)
    if per_unit_nm is None or len(values) not in (2, 3):
        return None
    z_value, y, x = (None, *values) if len(values) == 2 else values
    y_nm, x_nm = _length(y), _length(x)
    if y_nm is None or x_nm is None:
        return None
    z_scale = per_unit_nm if z_per_unit_nm is None else z_per_unit_nm
    z_nm = _length(z_value)
    return PixelSize((None if z_nm is None else z_nm * z_scale, y_nm * per_unit_nm, x_nm * per_unit_nm), source)


def is_screen_default(pixels_per_unit: Sequence[float], per_unit_nm: float) -> bool:
    """Whether resolutions of ``pixels_per_unit`` (y, x) in a unit of ``per_unit_nm`` nanometres are what programs
    write by default: one pixel per unit, or a screen/print resolution (:data:`SCREEN_DPI`) in inches or its
    equivalent in centimetres (72 dpi = 28.35 pixels per cm)."""
    if all(abs(p - 1.0) < 1e-9 for p in pixels_per_unit):
        return True
    dpi = [p * UNIT_NM["in"] / per_unit_nm for p in pixels_per_unit]
    return any(all(abs(d - screen) <= 0.01 * screen for d in dpi) for screen in SCREEN_DPI)
