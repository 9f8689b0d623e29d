# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The scale the network runs at: which zoom an image needs, and resampling to that zoom and back.

A model learns membranes at the width in pixels its training data showed them: ISBI 2012's ssTEM at 4 x 4 nm per
pixel for the shipped weights. On other EM the network must see membranes about that wide, so each section is
resampled by a **zoom** (model pixels per input pixel) before the network and the probability back to the input's
grid after it. Within one modality the zoom follows the physical pixel size (8 nm ssTEM: zoom 2); across modalities
it does not (a 50 nm ssTEM section projects a membrane several pixels wide, isotropic 10 nm FIB-SEM shows a thin
line), so the image's own evidence decides where the two disagree:

- ``zoom`` "auto" (default): the pixel size (``--pixel_size`` or the file's) gives a starting zoom; the network on a
  few sample windows at a ladder of zooms (:data:`ZOOM_LADDER`) finds the zoom whose membrane map is the most
  decided (lowest mean binary entropy) among maps with a plausible membrane fraction
  (:data:`MEMBRANE_FRACTION`). The starting zoom stands unless another zoom is clearly more decided
  (:data:`OVERRULE_MARGIN`); without any pixel size the estimate is used. One log line per image says what was
  known, what was chosen and why.
- ``zoom`` "pixel_size": the pixel size alone (1 where unknown).
- ``zoom`` a number (or ``[y, x]``, ``[z, y, x]``): that zoom; 1 runs the network on the input's own pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from .errors import BundleInputError
from .io import PixelSize
from .planes import is_isotropic
from .settings import _number, check_device

logger = logging.getLogger(__name__)

#: ISBI 2012's voxel size (z, y, x) in nm: the shipped model's scale (configs/metadata.json says so too).
ISBI_PIXEL_SIZE_NM = (50.0, 4.0, 4.0)
#: Zooms within this relative distance of 1 run on the input's own pixels: resampling costs more than it gains.
ZOOM_TOLERANCE = 0.1
#: The zooms the estimate tries first: half octaves from 1/2.8 to 4 (at 4 nm: 1.4 nm to 16 nm input).
ZOOM_LADDER = tuple(2 ** (k / 2) for k in range(-3, 5))
#: A membrane map whose membrane fraction (p > 0.5) lies outside this range is not a plausible EM map at that zoom:
#: far too large a zoom paints much of it membrane, far too small a one leaves almost none (and is very "decided":
#: ssTEM at 8 nm run at zoom 0.5 maps 4-14 % membrane at the lowest entropy of all; at its right zoom 25-30 %).
MEMBRANE_FRACTION = (0.15, 0.6)
#: The file's (or flag's) zoom stands unless another zoom's mean binary entropy is lower by this fraction of it (or
#: its map is implausible). ssTEM resampled from 2 to 16 nm with its true pixel size: at most 0.10 lower elsewhere;
#: 10 nm FIB-SEM at its physical zoom 2.5: 0.25 lower at zoom 1 (docs/README.md, "Pixel size").
OVERRULE_MARGIN = 0.15
#: Without any pixel size the model's own is assumed unless the estimate is more decided by this fraction.
UNKNOWN_MARGIN = 0.05
#: Side of the sample windows of the estimate, in model pixels, and how many sections they are taken from.
SAMPLE_SIDE = 256
SAMPLE_SECTIONS = 2
#: A near-isotropic volume whose voxels are more than this many times the model's isotropic voxel gets a warning:
#: the held-out FIB-SEM block resampled to 20 nm (zoom 2) gave 3D neurons of V_rand 0.64, at 5-10 nm 0.86-0.87
#: (docs/experiments.md, "FIB-SEM at other voxel sizes").
COARSEST_ISOTROPIC_ZOOM = 1.5
ZOOM_MODES = ("auto", "pixel_size")


@dataclass(frozen=True)
class ScaleChoice:
    """The zoom chosen for one image and why.

    Attributes:
        zoom: model pixels per input pixel, ``(y, x)`` for 2D networks or ``(z, y, x)`` for 3D ones; all 1.0 runs
            the network on the input's own grid.
        pixel_size_nm: the input's ``(z, y, x)`` pixel size in nm (``z`` may be None), or None where unknown.
        pixel_size_source: where that came from ("--pixel_size", the file's metadata in words, or "unknown").
        reason: how the zoom was chosen, in words, for the log line.
        overruled: the image's evidence overruled the pixel size (the log line is then a warning).
        coarse: a near-isotropic volume's voxels are coarser than the model's by more than
            :data:`COARSEST_ISOTROPIC_ZOOM` (the log line is then a warning).
    """

    zoom: tuple[float, ...]
    pixel_size_nm: tuple[float | None, float, float] | None
    pixel_size_source: str
    reason: str
    overruled: bool = False
    coarse: bool = False

    def describe(self, name: str) -> str:
        """The one log line for image ``name``."""
        size = format_nm(self.pixel_size_nm) + f" ({self.pixel_size_source})" if self.pixel_size_nm else "unknown"
        zoom = " x ".join(f"{z:.3g}" for z in self.zoom)
        return f"{name}: pixel size {size}; network at zoom {zoom} ({self.reason})"


def format_nm(nm: Sequence[float | None] | None) -> str:
    """``(z, y, x)`` nm as text: "4 x 4 nm" (y x), with z where known ("50 x 4 x 4 nm")."""
    if nm is None:
        return "unknown"
    z, y, x = nm
    parts = ([f"{z:.3g}"] if z else []) + [f"{y:.3g}", f"{x:.3g}"]
    return " x ".join(parts) + " nm"


def needs_resampling(zoom: Sequence[float] | None) -> bool:
    """Whether any factor of ``zoom`` is farther from 1 than :data:`ZOOM_TOLERANCE`."""
    return zoom is not None and any(abs(float(z) - 1.0) > ZOOM_TOLERANCE for z in zoom)


def _positive_list(value: object, name: str, lengths: tuple[int, ...], example: str) -> list[float]:
    """``value`` (one number or a list of ``lengths`` numbers) as positive finite floats, else a clear error."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    numbers = [_number(v) for v in items]
    if len(items) not in lengths or any(n is None or not math.isfinite(n) or n <= 0 for n in numbers):
        raise BundleInputError(name, f"must be a positive number or a list of {' or '.join(map(str, lengths))}, got "
                               f"{value!r}", f"pass e.g. --{name} {example}")  # fmt: skip
    return [float(n) for n in numbers]  # type: ignore[arg-type]


def parse_pixel_size(value: object) -> tuple[float | None, float, float] | None:
    """The ``pixel_size`` setting as ``(z, y, x)`` nm: None (or "file") reads the file's; one number is y = x;
    ``[y, x]``; ``[z, y, x]``."""
    if value is None or value == "file":
        return None
    numbers = _positive_list(value, "pixel_size", (1, 2, 3), "8 (nm, y = x), or [50, 8, 8] for z, y, x")
    if len(numbers) == 1:
        return (None, numbers[0], numbers[0])
    if len(numbers) == 2:
        return (None, numbers[0], numbers[1])
    return (numbers[0], numbers[1], numbers[2])


def parse_zoom(value: object, spatial_dims: int) -> str | tuple[float, ...]:
    """The ``zoom`` setting: "auto", "pixel_size", or a fixed zoom per spatial axis (one number for all)."""
    if isinstance(value, str):
        if value in ZOOM_MODES:
            return value
        raise BundleInputError("zoom", f"unknown value {value!r}", "use auto, pixel_size or a number such as 2")
    numbers = _positive_list(value, "zoom", (1, spatial_dims), "2 (the network sees the input twice as large)")
    return tuple(numbers * spatial_dims if len(numbers) == 1 else numbers)


def physical_zoom(
    pixel_size_nm: Sequence[float | None], model_nm: Sequence[float], spatial_dims: int
) -> tuple[float, ...]:
    """Model pixels per input pixel from the two ``(z, y, x)`` pixel sizes; z (3D only) is 1 where either is
    unknown."""
    z, y, x = pixel_size_nm
    zy, zx = y / model_nm[1], x / model_nm[2]
    if spatial_dims == 2:
        return (zy, zx)
    return ((z / model_nm[0]) if z and model_nm[0] else 1.0, zy, zx)


def zoomed_shape(shape: Sequence[int], zoom: Sequence[float]) -> tuple[int, ...]:
    """The spatial ``shape`` scaled by ``zoom`` (at least 1 pixel an axis)."""
    return tuple(max(1, int(round(int(n) * float(z)))) for n, z in zip(shape, zoom))


def resample(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``x`` ``(B, C, *S)`` resampled to spatial ``shape`` (align_corners False, so pixel centres map onto each
    other): 2D enlarges by cubic and shrinks by antialiased linear interpolation; 3D enlarges by linear
    interpolation and shrinks by area averaging. Cubic may overshoot the input's range slightly (callers clamp
    probabilities)."""
    shape = tuple(int(n) for n in shape)
    if tuple(x.shape[2:]) == shape:
        return x
    shrinks = any(n < s for n, s in zip(shape, x.shape[2:]))
    dtype = x.dtype
    x = x.float()
    if x.ndim == 4 and shrinks:
        out = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)
    elif x.ndim == 4:  # cubic keeps thin membranes sharper when enlarging (8 nm ssTEM: V_rand +0.006 over linear)
        out = F.interpolate(x, size=shape, mode="bicubic", align_corners=False)
    elif shrinks and all(n <= s for n, s in zip(shape, x.shape[2:])):
        out = F.interpolate(x, size=shape, mode="area")
    else:
        out = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    return out.to(dtype)


def resample_sections(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Every ``(Y, X)`` section of ``x`` ``(B, C, Z, Y, X)`` resampled to ``shape`` ``(Y', X')`` (:func:`resample`)."""
    b, c, z, h, w = x.shape
    flat = x.permute(0, 2, 1, 3, 4).reshape(b * z, c, h, w)
    out = resample(flat, shape)
    return out.reshape(b, z, c, *out.shape[-2:]).permute(0, 2, 1, 3, 4)


def meta_zoom(image: torch.Tensor, key: str = "zoom") -> tuple[float, ...] | None:
    """The zoom ``ChooseZoomd`` put in a ``MetaTensor``'s meta under ``key`` (batched: the first item's), or None:
    "zoom" (that of the sections), or "volume_zoom" (the ``(z, y, x)`` zoom of a volume segmented along three
    planes, ``scripts.planes``)."""
    zoom = getattr(image, "meta", {}).get(key) if hasattr(image, "meta") else None
    if zoom is None:
        return None
    values = torch.as_tensor(zoom if not isinstance(zoom, (list, tuple)) else torch.stack(
        [torch.as_tensor(z, dtype=torch.float64).reshape(-1) for z in zoom], dim=-1))  # fmt: skip
    return tuple(float(v) for v in values.reshape(-1, values.shape[-1])[0])


def binary_entropy(p: torch.Tensor) -> float:
    """Mean binary entropy (bits) of probabilities ``p``."""
    p = p.float().clamp(1e-6, 1 - 1e-6)
    return float((-(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))).mean())


def sample_windows(sections: torch.Tensor, zoom: float, side: int = SAMPLE_SIDE) -> torch.Tensor:
    """The centred window of each normalized section ``(n, C, Y, X)`` that covers ``side`` model pixels at
    ``zoom``, resampled to the model's grid: ``(n, C, s, s)`` with ``s`` <= ``side`` (smaller where the section is,
    at least 16, FusionNet's smallest input)."""
    h, w = sections.shape[-2:]
    out = max(16, min(side, int(min(h, w) * zoom)) // 16 * 16)  # FusionNet takes multiples of 16
    crop = min(h, w, max(1, int(round(out / zoom))))
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    window = sections[:, :, y0 : y0 + crop, x0 : x0 + crop]
    return resample(window, (out, out))


@dataclass(frozen=True)
class ZoomEvidence:
    """The membrane map of the sample windows at one zoom: its mean binary entropy and membrane fraction."""

    zoom: float
    entropy: float
    membrane_fraction: float

    @property
    def plausible(self) -> bool:
        return MEMBRANE_FRACTION[0] <= self.membrane_fraction <= MEMBRANE_FRACTION[1]


def zoom_evidence(
    sections: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor], zooms: Sequence[float]
) -> list[ZoomEvidence]:
    """The map's evidence at each of ``zooms``, from normalized sections ``(n, C, Y, X)`` (a few of the image's)
    and ``predict``: ``windows (B, C, s, s) -> membrane probability (B, 1, s, s)``."""
    evidence = []
    for zoom in zooms:
        p = predict(sample_windows(sections, zoom))
        evidence.append(ZoomEvidence(float(zoom), binary_entropy(p), float((p > 0.5).float().mean())))
    return evidence


def search_zoom(
    sections: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor], extra: Sequence[float] = ()
) -> list[ZoomEvidence]:
    """:func:`zoom_evidence` on the half-octave :data:`ZOOM_LADDER` and ``extra`` zooms (e.g. the pixel size's and
    1), then a quarter octave either side of the most decided plausible one, for :func:`refined_zoom`."""
    found = zoom_evidence(sections, predict, sorted(set(ZOOM_LADDER) | {float(z) for z in extra}))
    best = most_decided(found)
    if best is not None:
        tried = [e.zoom for e in found]
        finer = [
            best.zoom * 2**s for s in (-0.25, 0.25) if all(abs(math.log2(best.zoom * 2**s / t)) > 0.05 for t in tried)
        ]
        found += zoom_evidence(sections, predict, finer)
    return sorted(found, key=lambda e: e.zoom)


def most_decided(evidence: Sequence[ZoomEvidence]) -> ZoomEvidence | None:
    """The plausible zoom with the lowest entropy, or None if no zoom gave a plausible map."""
    plausible = [e for e in evidence if e.plausible]
    return min(plausible, key=lambda e: e.entropy) if plausible else None


def nearest(evidence: Sequence[ZoomEvidence], zoom: float) -> ZoomEvidence:
    """The entry of ``evidence`` nearest ``zoom`` (in log zoom)."""
    return min(evidence, key=lambda e: abs(math.log(e.zoom / zoom)))


def refined_zoom(evidence: Sequence[ZoomEvidence], best: ZoomEvidence) -> float:
    """``best``'s zoom moved to the vertex of the parabola through it and its two neighbours (entropy against log
    zoom), at most half way to either: the entropy is flat near its minimum, so the ladder's steps alone are coarse."""
    ladder = sorted(evidence, key=lambda e: e.zoom)
    i = ladder.index(best)
    if i == 0 or i == len(ladder) - 1:
        return best.zoom
    (u0, e0), (u1, e1), (u2, e2) = ((math.log(e.zoom), e.entropy) for e in ladder[i - 1 : i + 2])
    h0, h1 = u1 - u0, u2 - u1
    curvature = 2 * ((e2 - e1) / h1 - (e1 - e0) / h0) / (h0 + h1)
    if curvature <= 0:
        return best.zoom
    slope = ((e1 - e0) / h0 * h1 + (e2 - e1) / h1 * h0) / (h0 + h1)
    vertex = u1 + max(-h0 / 2, min(h1 / 2, -slope / curvature))
    return float(2 ** (round(vertex / math.log(2) * 16) / 16))  # 1/16 octave: float noise does not move the zoom


def pick_sections(count: int, wanted: int = SAMPLE_SECTIONS) -> list[int]:
    """Up to ``wanted`` section indices spread evenly over ``count`` sections (centres of equal parts)."""
    wanted = min(wanted, count)
    return sorted({int((2 * i + 1) * count // (2 * wanted)) for i in range(wanted)})


def choose_zoom(
    mode: str | tuple[float, ...],
    spatial_dims: int,
    model_nm: Sequence[float],
    file_nm: tuple[float | None, float, float] | None,
    file_source: str,
    flag_nm: tuple[float | None, float, float] | None = None,
    evidence: Callable[[], list[ZoomEvidence]] | None = None,
    isotropic_nm: Sequence[float] | None = None,
) -> ScaleChoice:
    """Decide the zoom of one image (see the module docstring).

    Args:
        mode: :func:`parse_zoom`'s value.
        spatial_dims: the network's (2 or 3).
        model_nm: the model's ``(z, y, x)`` pixel size in nm.
        file_nm: the input file's ``(z, y, x)`` pixel size in nm, or None; ``file_source`` says where it came from.
        flag_nm: ``--pixel_size`` (:func:`parse_pixel_size`), which replaces the file's; its missing z is the file's.
        evidence: computes :func:`zoom_evidence` for this image (called only where "auto" needs it).
        isotropic_nm: the model's scale for near-isotropic volumes (``scripts.planes.is_isotropic``: FIB-SEM, SBEM),
            or None. Where the model has one and the input's pixel size is near-isotropic, the zoom follows the
            pixel size against it, with no image evidence: every crop of one microscope gets the same zoom.
    """
    known, source = file_nm, file_source
    if flag_nm is not None:
        z = flag_nm[0] if flag_nm[0] is not None else (file_nm[0] if file_nm else None)
        known, source = (z, flag_nm[1], flag_nm[2]), "--pixel_size"
    if not isinstance(mode, str):
        return ScaleChoice(tuple(mode), known, source if known else "unknown", "--zoom")
    if isotropic_nm is not None and is_isotropic(known):
        reason = f"near-isotropic (FIB-SEM/SBEM): pixel size / the model's isotropic {format_nm(tuple(isotropic_nm))}"
        zoom = physical_zoom(known, isotropic_nm, spatial_dims)
        coarse = math.prod(zoom[-2:]) ** 0.5 > COARSEST_ISOTROPIC_ZOOM
        if coarse:
            reason += (f"; voxels over {COARSEST_ISOTROPIC_ZOOM}x the model's lose thin neurites (the held-out "
                       "FIB-SEM block at 20 nm: 3D neurons V_rand 0.64, at 5-10 nm 0.86-0.87)")  # fmt: skip
        return ScaleChoice(zoom, known, source, reason, coarse=coarse)
    prior = physical_zoom(known, model_nm, spatial_dims) if known else None
    model = format_nm(tuple(model_nm))
    if mode == "pixel_size" or evidence is None:
        if prior is None:
            reason = f"no pixel size known: assumed the model's {model}; pass --pixel_size to set it"
            return ScaleChoice((1.0,) * spatial_dims, None, "unknown", reason)
        return ScaleChoice(prior, known, source, f"pixel size / the model's {model}")
    found = evidence()
    best = most_decided(found)
    if best is None:
        zoom, why = (prior, "pixel size") if prior else ((1.0,) * spatial_dims, f"assumed the model's {model}")
        return ScaleChoice(zoom, known, source if known else "unknown", f"{why}; no zoom gave a plausible map")
    estimate = refined_zoom(found, best)
    if prior is None:
        # a model of two scales reads an image that matches it at zoom 1 as either (ssTEM pixels or FIB-SEM voxels)
        scales = model if isotropic_nm is None else f"{model} (ssTEM) or {format_nm(tuple(isotropic_nm))} (FIB-SEM)"
        at_one = nearest(found, 1.0)
        if best.entropy >= at_one.entropy * (1 - UNKNOWN_MARGIN):
            reason = f"no pixel size known: the image is consistent with the model's {scales}"
            return ScaleChoice((1.0,) * spatial_dims, None, "unknown", reason + "; pass --pixel_size to set it")
        reason = f"no pixel size known: estimated from the image (model {scales}); pass --pixel_size to set it"
        return ScaleChoice(_with_z(estimate, spatial_dims), None, "unknown", reason)
    planar = math.sqrt(prior[-1] * prior[-2])
    at_prior = nearest(found, planar)
    if at_prior.plausible and best.entropy >= at_prior.entropy * (1 - OVERRULE_MARGIN):
        return ScaleChoice(prior, known, source, f"pixel size / the model's {model}, confirmed by the image")
    reason = (f"the image's membranes match the model at zoom {estimate:.3g}, not the pixel size's {planar:.3g} "
              "(another modality?); pass --zoom pixel_size to follow the pixel size")  # fmt: skip
    return ScaleChoice(_with_z(estimate, spatial_dims, prior), known, source, reason, overruled=True)


def _with_z(planar: float, spatial_dims: int, prior: Sequence[float] | None = None) -> tuple[float, ...]:
    """A planar zoom as a per-axis zoom; a 3D network keeps the prior's z (1 where unknown)."""
    if spatial_dims == 2:
        return (planar, planar)
    return ((prior[0] if prior else 1.0), planar, planar)


def model_pixel_size(ckpt_path: str, default: Sequence[float] = ISBI_PIXEL_SIZE_NM) -> tuple[float, float, float]:
    """The ``(z, y, x)`` nm pixel size of the data a checkpoint learned from: its sidecar ``<ckpt>.json``
    (``{"pixel_size_nm": [z, y, x]}``, which training writes beside the weights) where there is one, else
    ``default`` (the shipped model's, ISBI 2012)."""
    import json
    import os

    sidecar = os.path.splitext(str(ckpt_path))[0] + ".json"
    if not os.path.isfile(sidecar):
        return tuple(float(v) for v in default)  # type: ignore[return-value]
    try:
        with open(sidecar) as f:
            values = json.load(f)["pixel_size_nm"]
        return tuple(_positive_list(values, "pixel_size_nm", (3,), "[50, 4, 4]"))  # type: ignore[return-value]
    except (OSError, ValueError, KeyError, TypeError) as e:
        fix = 'write it as {"pixel_size_nm": [z, y, x]} in nm, or delete it to assume ISBI 2012\'s 50 x 4 x 4 nm'
        raise BundleInputError(sidecar, f"cannot be read as the model's pixel size ({e})", fix) from e


def model_isotropic_pixel_size(ckpt_path: str) -> tuple[float, float, float] | None:
    """The ``(z, y, x)`` nm scale a checkpoint learned near-isotropic volumes (FIB-SEM) at: its sidecar's
    ``"isotropic_pixel_size_nm"`` (the shipped two-modality model: 10 nm), or None where it records none (the model
    then has one scale, :func:`model_pixel_size`, for every input)."""
    import json
    import os

    sidecar = os.path.splitext(str(ckpt_path))[0] + ".json"
    if not os.path.isfile(sidecar):
        return None
    try:
        with open(sidecar) as f:
            values = json.load(f).get("isotropic_pixel_size_nm")
        if values is None:
            return None
        return tuple(_positive_list(values, "isotropic_pixel_size_nm", (3,), "[10, 10, 10]"))  # type: ignore
    except (OSError, ValueError, AttributeError, TypeError) as e:
        fix = 'write it as {"pixel_size_nm": [z, y, x], "isotropic_pixel_size_nm": [z, y, x]} in nm'
        raise BundleInputError(sidecar, f"cannot be read as the model's pixel size ({e})", fix) from e


def write_model_pixel_size(
    ckpt_path: str, pixel_size_nm: Sequence[float], isotropic_nm: Sequence[float] | None = None
) -> str:
    """Write the sidecar :func:`model_pixel_size` (and :func:`model_isotropic_pixel_size`, where ``isotropic_nm``
    is given) reads beside ``ckpt_path``; returns its path."""
    import json
    import os

    from .outputs import atomic_path

    entry = {"pixel_size_nm": [float(v) for v in pixel_size_nm]}
    if isotropic_nm is not None:
        entry["isotropic_pixel_size_nm"] = [float(v) for v in isotropic_nm]
    sidecar = os.path.splitext(str(ckpt_path))[0] + ".json"
    with atomic_path(sidecar) as tmp, open(tmp, "w") as f:
        json.dump(entry, f)
    return sidecar


def pixel_size_entry(pixel_size: object) -> dict:
    """A file's pixel size (``scripts.io.PixelSize`` or None) as a data-dict entry that batches (no None):
    ``{"nm": [z, y, x], "source": text}``, NaN for an unknown z, ``[]`` and "unknown" where nothing is known."""
    nm = getattr(pixel_size, "nm", None)
    if nm is None:
        return {"nm": [], "source": "unknown"}
    return {"nm": [float("nan") if v is None else float(v) for v in nm], "source": str(pixel_size.source)}


def pixel_size_from_entry(entry: object) -> PixelSize | None:
    """The inverse of :func:`pixel_size_entry` (None where nothing is known), e.g. for the writers."""
    nm = list(entry.get("nm") or []) if isinstance(entry, dict) else []
    if len(nm) != 3:
        return None
    z, y, x = (float(torch.as_tensor(v, dtype=torch.float64).reshape(-1)[0]) for v in nm)  # batched: the first
    source = entry.get("source", "file")
    source = source[0] if isinstance(source, (list, tuple)) and source else source
    return PixelSize((None if math.isnan(z) else z, y, x), str(source))


def _evidence_of(
    sections: Callable[[], torch.Tensor], predict: Callable[[torch.Tensor], torch.Tensor], extra: Sequence[float]
) -> list[ZoomEvidence]:
    return search_zoom(sections(), predict, extra)


def table_spacing(pixel_size: object) -> tuple[float, float, float] | None:
    """The ``(z, y, x)`` nm spacing of the cell table's physical columns (``scripts.morphology.cell_table``):
    the pixel size's (NaN z where unknown: 3D volumes then stay empty), or None where nothing is known."""
    nm = getattr(pixel_size, "nm", None)
    if nm is None:
        return None
    return (float("nan") if nm[0] is None else float(nm[0]), float(nm[1]), float(nm[2]))


class ZoomPolicy:
    """Chooses each image's zoom from inference.json's settings (:func:`choose_zoom`) and logs why.

    Args:
        zoom: "auto", "pixel_size" or a fixed zoom (see the module docstring).
        pixel_size: "file" (the file's pixel size) or the input's pixel size in nm (one number, ``[y, x]`` or
            ``[z, y, x]``), which replaces the file's.
        model_pixel_size: the model's ``(z, y, x)`` nm (:func:`model_pixel_size`).
        spatial_dims: the network's.
        network, inferer: what the "auto" estimate runs (``inferer.predictor(network, device, tta=False)``: one pass
            at the inferer's precision).
        ckpt_path, device: the weights the estimate's copy of ``network`` loads (:meth:`estimator`), and where.
        isotropic_pixel_size: the model's ``(z, y, x)`` nm scale for near-isotropic volumes
            (:func:`model_isotropic_pixel_size`), or None.
    """

    def __init__(
        self,
        zoom: object = "auto",
        pixel_size: object = "file",
        model_pixel_size: Sequence[float] = ISBI_PIXEL_SIZE_NM,
        spatial_dims: int = 2,
        network: torch.nn.Module | None = None,
        inferer: object = None,
        ckpt_path: str | None = None,
        device: torch.device | str = "cpu",
        isotropic_pixel_size: Sequence[float] | None = None,
    ) -> None:
        self.mode = parse_zoom(zoom, spatial_dims)
        self.flag_nm = parse_pixel_size(pixel_size)
        self.model_nm = tuple(_positive_list(model_pixel_size, "model_pixel_size", (3,), "[50, 4, 4]"))
        self.isotropic_nm = (
            None if isotropic_pixel_size is None
            else tuple(_positive_list(isotropic_pixel_size, "isotropic_pixel_size", (3,), "[10, 10, 10]"))
        )  # fmt: skip
        self.spatial_dims = spatial_dims
        self.network, self.inferer, self.ckpt_path, self.device = network, inferer, ckpt_path, check_device(device)
        self._estimator: torch.nn.Module | None = None

    def _predict(self, windows: torch.Tensor) -> torch.Tensor:
        """Membrane probability of windows ``(B, C, s, s)``: one pass (no TTA) at the inferer's precision."""
        network = self.estimator()
        device = next(network.parameters()).device
        predict = self.inferer.predictor(network, device, tta=False)
        with torch.inference_mode():
            return predict(windows.to(device)).cpu()

    def estimator(self) -> torch.nn.Module:
        """The network the estimate runs: ``network``, with ``ckpt_path``'s weights loaded into it here when given
        (inference.json passes its own instance of ``network_def``, ``%network_def``: MONAI Label loads the weights
        into its own copy of the network, never into the config's); a TorchScript ``ckpt_path`` is used as it is."""
        if self.ckpt_path is None:
            return self.network
        if self._estimator is None:
            from .checkpoint import is_torchscript, load_weights

            if is_torchscript(self.ckpt_path):
                network = torch.jit.load(str(self.ckpt_path), map_location=self.device)
            else:
                network = load_weights(self.network, self.ckpt_path).to(self.device)
            self._estimator = network.eval()
        return self._estimator

    def choose(self, name: str, sections: Callable[[], torch.Tensor] | None, pixel_size: object = None) -> ScaleChoice:
        """The zoom of image ``name`` (and the log line saying why).

        Args:
            name: the image, for the log.
            sections: returns a few normalized sections of it, ``(n, C, Y, X)`` (:func:`pick_sections`); None where
                the image's evidence cannot be had (then the pixel size alone decides).
            pixel_size: the file's ``scripts.io.PixelSize`` (``nm`` and ``source``), or None.
        """
        file_nm = getattr(pixel_size, "nm", None)
        file_source = getattr(pixel_size, "source", "unknown")
        evidence = None
        if sections is not None and self.network is not None and self.spatial_dims == 2:
            evidence = partial(_evidence_of, sections, self._predict, self.candidates(file_nm))
        choice = choose_zoom(
            self.mode, self.spatial_dims, self.model_nm, file_nm, file_source, self.flag_nm, evidence, self.isotropic_nm
        )
        doubtful = choice.overruled or choice.coarse or choice.pixel_size_nm is None
        (logger.warning if doubtful else logger.info)(choice.describe(name))
        return choice

    def candidates(self, file_nm: tuple[float | None, float, float] | None) -> list[float]:
        """Zooms the estimate tries besides :data:`ZOOM_LADDER`: 1 and the pixel size's own zoom."""
        known = self.flag_nm or file_nm
        if known is None:
            return [1.0]
        zy, zx = physical_zoom(known, self.model_nm, 2)
        return [1.0, math.sqrt(zy * zx)]


def fixed_zoom(
    zoom: object, pixel_size: object, model_nm: Sequence[float], spatial_dims: int
) -> tuple[float, ...] | None:
    """The one zoom of a whole evaluation (evaluate.json): ``zoom`` if it is a number, else the physical zoom of
    ``pixel_size`` (the data's, nm) against ``model_nm``; None (the data's own grid) where neither is given. A
    score should not hang on an estimate, so no image evidence is used here."""
    mode = parse_zoom(zoom, spatial_dims)
    if not isinstance(mode, str):
        return mode
    known = parse_pixel_size(pixel_size)
    return physical_zoom(known, model_nm, spatial_dims) if known else None


def record_training_pixel_size(
    model_dir: str,
    dataset_dir: str,
    pixel_size: object = "file",
    base_ckpt: str | None = None,
    isotropic_pixel_size: object = None,
) -> tuple[float, float, float] | None:
    """Write the pixel size of the data a training learns from beside its weights (``<model_dir>/model.json``,
    read by :func:`model_pixel_size`), so inference, MONAI Label and exports know the model's scale.

    It is ``--pixel_size`` (nm) where given, else the first training image's own (``scripts.io.read_pixel_size``),
    else, for a fine-tuning that starts from ``base_ckpt``, that model's (its scale is assumed kept). Where none is
    known nothing is written (inference then assumes ISBI 2012's 50 x 4 x 4 nm) and a warning names the flag.
    The scale for near-isotropic volumes (:func:`model_isotropic_pixel_size`) is ``isotropic_pixel_size`` where
    given, else the training pixel size where that is near-isotropic (a model trained on FIB-SEM), else the base
    model's. Returns the pixel size written, or None."""
    import os

    from .data import find_labelled_pairs
    from .io import read_pixel_size

    flag = parse_pixel_size(pixel_size)
    known, source = (flag, "--pixel_size") if flag else (None, "")
    try:  # MONAI Label passes its datalist instead of a dataset_dir
        pairs = find_labelled_pairs(dataset_dir).get("training", []) if known is None else []
    except BundleInputError:
        pairs = []
    if known is None:
        for pair in pairs:
            found = read_pixel_size(pair["image"])
            if found is not None:
                known, source = found.nm, f"{os.path.basename(pair['image'])}: {found.source}"
                break
    if known is None and base_ckpt is not None:
        base = model_pixel_size(base_ckpt)
        known, source = (base[0], base[1], base[2]), f"the model fine-tuned ({base_ckpt})"
    if known is None:
        logger.warning(
            "%s: the training images' pixel size is unknown; the model is taken to be at ISBI 2012's 50 x 4 x 4 nm. "
            "Pass --pixel_size (nm) to record it", dataset_dir)  # fmt: skip
        return None
    z = known[0] if known[0] is not None else ISBI_PIXEL_SIZE_NM[0]
    recorded = (float(z), float(known[1]), float(known[2]))
    isotropic = parse_pixel_size(isotropic_pixel_size) if isotropic_pixel_size is not None else None
    if isotropic is None and is_isotropic(known):
        isotropic = recorded
    if isotropic is None and base_ckpt is not None:
        isotropic = model_isotropic_pixel_size(base_ckpt)
    if isotropic is not None:
        isotropic = tuple(float(v if v is not None else isotropic[1]) for v in isotropic)
    os.makedirs(model_dir, exist_ok=True)
    path = write_model_pixel_size(os.path.join(model_dir, "model.pt"), recorded, isotropic)
    also = f", near-isotropic volumes at {format_nm(isotropic)}" if isotropic else ""
    logger.info("model pixel size %s (%s)%s recorded in %s", format_nm(recorded), source, also, path)
    return recorded


class TrainingPixelSize:
    """train.json's handler that writes the model's pixel size beside its weights
    (:func:`record_training_pixel_size`) when training starts: after the network, the data and every setting were
    built, so a run that stops on a bad setting leaves ``model_dir`` (by default the shipped ``models/``) as it was.
    Arguments as :func:`record_training_pixel_size`'s."""

    def __init__(
        self,
        model_dir: str,
        dataset_dir: str,
        pixel_size: object = "file",
        base_ckpt: str | None = None,
        isotropic_pixel_size: object = None,
    ) -> None:
        self.arguments = (model_dir, dataset_dir, pixel_size, base_ckpt, isotropic_pixel_size)

    def attach(self, engine: object) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)  # type: ignore[attr-defined]

    def __call__(self, engine: object = None) -> tuple[float, float, float] | None:
        return record_training_pixel_size(*self.arguments)
