# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Dictionary transforms for EM stacks: loading, per-section normalization, membrane targets.

Shapes: a 2D section is ``(1, Y, X)``, a stack is ``(1, Z, Y, X)`` (channel first, sections along Z).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from .data import check_membrane_labels, with_neighbours
from .errors import BundleInputError
from .io import read_stack, require_volume
from .planes import PLANES_MODES, anisotropy_window, choose_planes, volume_zoom
from .scale import ZoomPolicy, pick_sections, pixel_size_entry, pixel_size_from_entry
from .settings import choice

logger = logging.getLogger(__name__)


class LoadStackd(MapTransform):
    """Read ``d[key]`` (a path) as a ``(1, Z, Y, X)`` float32 tensor in working order.

    Also stores ``<key>_path``, ``<key>_layout`` (the file's axis order, see ``scripts.io.to_file_order``) and
    ``<key>_spacing`` (``(z, y, x)`` or an empty list) so writers can restore the input's shape and units, and
    ``<key>_pixel_size`` (``{"nm": [z, y, x], "source": ...}``, :func:`scripts.scale.pixel_size_entry`).

    Args:
        keys: the image key.
        spatial_dims: the network's spatial dims, if known; a 3D network (3) rejects a single 2D section, which it
            would otherwise segment as a volume of copies of that section.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            stack = read_stack(str(d[key]))
            if self.spatial_dims == 3:
                require_volume(stack.path, stack.array.shape)
            d[f"{key}_path"] = stack.path
            d[f"{key}_layout"] = stack.layout
            d[f"{key}_spacing"] = list(stack.spacing) if stack.spacing else []
            d[f"{key}_pixel_size"] = pixel_size_entry(getattr(stack, "pixel_size", None))
            d[key] = torch.from_numpy(stack.array.astype(np.float32, copy=False))[None]
        return d


def normalize_sections(image: np.ndarray | torch.Tensor, lower: float = 1.0, upper: float = 99.0) -> torch.Tensor:
    """Scale each 2D section (the last two axes) so its ``lower``/``upper`` percentiles map to 0/1, clipped.

    ssTEM sections vary in brightness and contrast, so each is normalized on its own, in training and
    inference alike. A flat section (all one value) becomes all zeros. Shape is kept.

    Any finite float32 input gives a finite result: a section with values beyond 2**64 (or all below 2**-64) is
    first scaled by a power of two, which is exact and leaves the normalized values as they were, so the
    percentile interpolation and the differences below cannot overflow float32 (near 3.4e38 they would give
    inf - inf = NaN). Other sections are computed exactly as without it.
    """
    x = torch.as_tensor(image, dtype=torch.float32)
    flat = x.reshape(-1, x.shape[-2] * x.shape[-1])
    peak = flat.abs().amax(dim=1) if flat.numel() else flat.new_zeros(flat.shape[0])
    extreme = (peak > 2.0**64) | ((peak > 0) & (peak < 2.0**-64))
    if bool(extreme.any()):
        shift = -torch.where(extreme, torch.frexp(peak).exponent, 0)[:, None].to(flat.dtype)
        half = torch.trunc(shift / 2)  # two steps: 2**shift alone may not fit float32 (subnormal peaks)
        flat = torch.ldexp(torch.ldexp(flat, half), shift - half)  # peak now in [0.5, 1): exact
    q = torch.quantile(flat[:, :: max(1, flat.shape[1] // 65536)], torch.tensor([lower / 100, upper / 100]), dim=1)
    lo, span = q[0][:, None], (q[1] - q[0])[:, None]
    scaled = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.clamp_(0.0, 1.0).reshape(x.shape)


class NormalizeSectionsd(MapTransform):
    """Dictionary version of :func:`normalize_sections`."""

    def __init__(self, keys: KeysCollection, lower: float = 1.0, upper: float = 99.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.lower, self.upper = lower, upper

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = normalize_sections(d[key], self.lower, self.upper)  # type: ignore[arg-type]
        return d


TARGETS = ("membrane", "boundaries", "foreground")


class NeighbourSectionsd(MapTransform):
    """Give a 2D network each section's neighbours as extra channels: ``(1, Z, Y, X) -> (2c + 1, Z, Y, X)``.

    Channel ``c`` (= ``context_sections``) is the section itself, the others the ``c`` sections above and below,
    the edge section repeated beyond the stack (:func:`scripts.data.with_neighbours`, as training builds them).
    A sliding-window or slice inferer then passes ``(B, 2c + 1, Y, X)`` windows to the network. With
    ``context_sections`` 0 the image passes unchanged.
    """

    def __init__(self, keys: KeysCollection, context_sections: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.context = context_sections

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        if self.context == 0:
            return d
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            stack = with_neighbours(image[0].numpy(), self.context)  # (Z, 2c + 1, Y, X)
            d[key] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(stack, 1, 0)))
        return d


class ChooseZoomd(MapTransform):
    """Decide the zoom the network runs ``d[key]`` at (``scripts.scale.ZoomPolicy``: the pixel size and the image's
    own evidence) and the planes it is segmented along (``scripts.planes.choose_planes``), and record them: the
    image becomes a ``MetaTensor`` whose meta ``"zoom"`` the inferer (``scripts.inferers.MembraneInferer``) resamples
    by (and, for three planes, ``"volume_zoom"``, the ``(z, y, x)`` zoom), ``<key>_zoom`` holds the zoom and
    ``<key>_planes`` the number of planes (1 or 3) for the writers. Expects the normalized ``(C, Z, Y, X)`` image
    and ``LoadStackd``'s ``<key>_path`` and ``<key>_pixel_size``. ``planes``: "auto", "xy" or "xyz".
    """

    def __init__(
        self, keys: KeysCollection, policy: ZoomPolicy, planes: str = "xy", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.policy = policy
        self.planes = choice(planes, "planes", PLANES_MODES)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])

            def sections(image: torch.Tensor = image) -> torch.Tensor:
                picked = pick_sections(image.shape[1])
                return image[:, picked].permute(1, 0, 2, 3).float()  # (n, C, Y, X)

            name = os.path.basename(str(d.get(f"{key}_path", key)))
            known = pixel_size_from_entry(d.get(f"{key}_pixel_size"))
            choice_ = self.policy.choose(name, sections if image.ndim == 4 else None, known)
            meta = {"zoom": torch.tensor(choice_.zoom, dtype=torch.float64)}
            if image.ndim == 4 and image.shape[0] == 1:  # context_sections' z-neighbour channels: xy only
                volume = image[0]
                planes = choose_planes(self.planes, choice_.pixel_size_nm, volume.shape[0], self.policy.spatial_dims,
                                       lambda: volume[anisotropy_window(volume.shape)].numpy())  # fmt: skip
                logger.info("%s: planes %s (%s)", name, ", ".join(planes.planes), planes.reason)
                if planes.three:
                    zoom = volume_zoom(choice_.zoom, choice_.pixel_size_nm)
                    meta["volume_zoom"] = torch.tensor(zoom, dtype=torch.float64)
            d[key] = MetaTensor(image, meta=meta)
            d[f"{key}_zoom"] = list(choice_.zoom)
            d[f"{key}_planes"] = 3 if "volume_zoom" in meta else 1
        return d


def boundaries_from_instances(labels: np.ndarray, spatial_dims: int) -> np.ndarray:
    """1 where a pixel/voxel has a neighbour (along the last ``spatial_dims`` axes) of another label, or label 0.

    Both sides of a label change are marked, so boundaries are 2 pixels thick. Shape is kept; dtype bool.
    """
    boundary = labels == 0
    for axis in range(labels.ndim - spatial_dims, labels.ndim):
        change = np.diff(labels, axis=axis) != 0
        before = [slice(None)] * labels.ndim
        after = [slice(None)] * labels.ndim
        before[axis], after[axis] = slice(None, -1), slice(1, None)
        boundary[tuple(before)] |= change
        boundary[tuple(after)] |= change
    return boundary


class MakeTargetd(MapTransform):
    """Turn a label into the float target the network learns (channel-first arrays, shape kept).

    Args:
        keys: the label key.
        target: "membrane": ISBI labels (0 = membrane, one other value = cell), target = label == 0; labels
            with more than two values raise ``BundleInputError``. "boundaries": instance labels (e.g. neurons),
            target = boundaries between instances (see :func:`boundaries_from_instances`). "foreground": a label
            file of objects such as cell bodies or nuclei, target = label != 0.
        spatial_dims: 2 marks boundaries within sections, 3 also across sections.
    """

    def __init__(
        self, keys: KeysCollection, target: str = "membrane", spatial_dims: int = 2, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if target not in TARGETS:
            raise BundleInputError("target", f"unknown value {target!r}", f"use one of {', '.join(TARGETS)}")
        self.target = target
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = np.asarray(d[key])
            if self.target == "membrane":
                check_membrane_labels(label, str(d.get("name", key)))
                target = label == 0
            elif self.target == "boundaries":
                target = boundaries_from_instances(label, self.spatial_dims)
            else:
                target = label != 0
            d[key] = torch.from_numpy(target.astype(np.float32))
        return d


class CheckSpatialSized(MapTransform):
    """Check that every sample is at least ``min_size`` in its last ``len(min_size)`` axes (e.g. the patch size)."""

    def __init__(self, keys: KeysCollection, min_size: tuple[int, ...], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.min_size = tuple(int(s) for s in min_size)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            size = tuple(np.asarray(d[key]).shape[-len(self.min_size) :])
            if any(s < m for s, m in zip(size, self.min_size)):
                raise BundleInputError(
                    d.get("name", key),
                    f"size {size} is smaller than the patch size {self.min_size}",
                    f"pass a smaller --patch_size (a multiple of 16, at most {min(size)})",
                )
        return d
