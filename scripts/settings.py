# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Checks of a workflow's settings before any work starts, with errors that name the key and the fix.

``configs/train.json`` calls :func:`check_training` first in its ``initialize`` list, so ``--epochs 0``,
``--batch_size 0`` or ``--learning_rate -1`` stop at once with one line instead of a PyTorch or Ignite traceback
(or, for ``--learning_rate 0``, a run that silently learns nothing); ``configs/evaluate.json`` calls
:func:`check_output_dir` (MONAI's TensorBoard and metrics writers would fail with a traceback).
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from .errors import BundleInputError
from .io import make_output_folder

DIVISOR = 16  # FusionNet's four poolings: every window and patch side is a multiple of 16


def _number(value: object) -> float | None:
    """``value`` as a float if it is a real number (not a bool, a string or a list), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value)


def integer(value: object, name: str, minimum: int, example: object) -> int:
    """``value`` as an int of at least ``minimum`` (``2.0`` counts as 2); else a ``BundleInputError`` for ``name``."""
    number = _number(value)
    if number is None or not math.isfinite(number) or number != int(number) or int(number) < minimum:
        bound = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise BundleInputError(name, f"must be {bound}, got {value!r}", f"pass e.g. --{name} {example}")
    return int(number)


def real(value: object, name: str, example: object, positive: bool = True) -> float:
    """``value`` as a finite float, > 0 (``positive``) or >= 0; else a ``BundleInputError`` for ``name``."""
    number = _number(value)
    if number is None or not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "a positive number" if positive else "a number >= 0"
        raise BundleInputError(name, f"must be {bound}, got {value!r}", f"pass e.g. --{name} {example}")
    return number


def spatial_size(value: object, name: str, spatial_dims: int, example: int = 256) -> list[int]:
    """``value`` as ``spatial_dims`` positive multiples of 16 (e.g. a patch size); else a ``BundleInputError``."""
    sizes = list(value) if isinstance(value, (list, tuple)) else None
    numbers = [_number(s) for s in sizes] if sizes is not None else []
    if (
        sizes is None
        or len(sizes) != spatial_dims
        or any(n is None or n != int(n) or n <= 0 or int(n) % DIVISOR for n in numbers)
    ):
        raise BundleInputError(
            name,
            f"must be a list of {spatial_dims} positive multiples of {DIVISOR} (one per spatial axis), got {value!r}",
            f'pass e.g. --{name} "{[example] * spatial_dims}"',
        )
    return [int(n) for n in numbers]  # type: ignore[arg-type]


def check_output_dir(output_dir: str | os.PathLike) -> str:
    """Create ``output_dir`` if needed and check that a file can be written in it; return it as a string."""
    folder = make_output_folder(output_dir)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        problem = f"output folder is not writable ({e.strerror})"
        raise BundleInputError(folder, problem, "choose a writable --output_dir") from e
    return str(folder)


def check_training(
    epochs: object,
    batch_size: object,
    learning_rate: object,
    patch_size: object,
    spatial_dims: object = 2,
    samples_per_section: object = 1,
    val_interval: object = 1,
    weight_decay: object = 0.0,
    num_workers: object = 0,
    output_dir: str | os.PathLike | None = None,
) -> bool:
    """Check configs/train.json's settings (and that ``output_dir`` is writable) before anything is built.

    Raises:
        BundleInputError: naming the first bad key, what is wrong with it and a value to pass instead.
    """
    dims = integer(spatial_dims, "spatial_dims", 2, 2)
    if dims not in (2, 3):
        problem = f"must be 2 or 3, got {spatial_dims!r}"
        raise BundleInputError("spatial_dims", problem, "pass --spatial_dims 2 (sections) or 3 (volumes)")
    integer(epochs, "epochs", 1, 100)
    integer(batch_size, "batch_size", 1, 2)
    real(learning_rate, "learning_rate", 0.001)
    real(weight_decay, "weight_decay", 1e-05, positive=False)
    spatial_size(patch_size, "patch_size", dims, 256 if dims == 2 else 64)
    integer(samples_per_section, "samples_per_section", 1, 4)
    integer(val_interval, "val_interval", 1, 5)
    integer(num_workers, "num_workers", 0, 0)
    if output_dir is not None:
        check_output_dir(output_dir)
    return True
