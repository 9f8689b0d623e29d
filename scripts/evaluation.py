# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Helpers for the evaluation workflow's handlers."""

from __future__ import annotations

from monai.utils import ImageMetaKey


def section_names(batch: list[dict] | dict) -> list[dict[str, str]]:
    """Per-item ``{"filename_or_obj": "file.tif[z]"}`` for ``MetricsSaver``'s per-section metric details."""
    items = batch if isinstance(batch, list) else [batch]
    names: list[str] = []
    for item in items:
        name = item.get("name", "")
        names.extend(name if isinstance(name, (list, tuple)) else [name])
    return [{ImageMetaKey.FILENAME_OR_OBJ: n} for n in names]
