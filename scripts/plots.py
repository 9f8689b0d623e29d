# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Figures a person checks first: cells drawn over the EM image, and histograms of cell size and shape."""

from __future__ import annotations

import numpy as np

from .outputs import atomic_path


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:  # type: ignore[no-untyped-def]
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)


def save_overlay(image: np.ndarray, labels: np.ndarray, path: str, max_sections: int = 3) -> None:
    """Draw cell boundaries and random cell colours over up to ``max_sections`` evenly spaced sections.

    Args:
        image: ``(Z, Y, X)`` EM stack (any dtype).
        labels: ``(Z, Y, X)`` cell labels, 0 = boundary/background.
        path: the PNG to write.
        max_sections: how many sections to show side by side.
    """
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    plt = _pyplot()
    picks = np.unique(np.linspace(0, image.shape[0] - 1, min(max_sections, image.shape[0])).round().astype(int))
    fig, axes = plt.subplots(1, len(picks), figsize=(5 * len(picks), 5), squeeze=False)
    for ax, z in zip(axes[0], picks):
        section = image[z].astype(np.float32)
        lo, hi = np.percentile(section, (1, 99))
        gray = np.clip((section - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb = label2rgb(labels[z], image=gray, alpha=0.25, bg_label=0, image_alpha=1.0)
        rgb[find_boundaries(labels[z], mode="inner")] = (1.0, 1.0, 0.0)
        ax.imshow(rgb)
        ax.set_title(f"section {z}: {len(np.unique(labels[z])) - (labels[z] == 0).any()} cells")
        ax.axis("off")
    _save(fig, path)


def save_morphology_histograms(
    rows: list[dict], path: str, size_key: str = "area_px", shape_key: str = "solidity"
) -> None:
    """Histograms of cell size (``size_key``), equivalent diameter and shape (``shape_key``) from a cell table."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes, (size_key, "equivalent_diameter_px", shape_key)):
        values = np.array([float(r[key]) for r in rows if r.get(key, "") != ""], dtype=float)
        values = values[np.isfinite(values)]
        ax.hist(values, bins=30)
        ax.set_xlabel(key)
        ax.set_ylabel("cells")
    fig.suptitle(f"{len(rows)} cells")
    _save(fig, path)
