# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Checks of a workflow's settings before any work starts, with errors that name the key and the fix.

``configs/train.json`` calls :func:`check_training` first in its ``initialize`` list, so ``--epochs 0``,
``--batch_size 0`` or ``--learning_rate -1`` stop at once with one line instead of a PyTorch or Ignite traceback
(or, for ``--learning_rate 0``, a run that silently learns nothing); ``configs/evaluate.json`` calls
:func:`check_output_dir` (MONAI's TensorBoard and metrics writers would fail with a traceback). The inference
classes check their own keys where they read them, with the helpers here (:func:`choice`, :func:`fraction`,
:func:`check_device`, :func:`path_setting`, :func:`check_window_count`).
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
import torch

from .errors import BundleInputError
from .outputs import make_output_folder, remove_stale_temporaries

DIVISOR = 16  # FusionNet's four poolings: every window and patch side is a multiple of 16
# train.json's (sections) and train_3d.json's (volumes) training patch side, by spatial_dims
TRAINING_PATCH_SIDE = {2: 256, 3: 64}


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


def spatial_dimensions(value: object) -> int:
    """``spatial_dims`` as 2 (sections) or 3 (volumes); else a ``BundleInputError``."""
    dims = integer(value, "spatial_dims", 2, 2)
    if dims not in TRAINING_PATCH_SIDE:
        problem = f"must be 2 or 3, got {value!r}"
        raise BundleInputError("spatial_dims", problem, "pass --spatial_dims 2 (sections) or 3 (volumes)")
    return dims


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


def choice(value: object, name: str, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options``; else a ``BundleInputError`` for ``name`` with the closest option."""
    if isinstance(value, str) and value in options:
        return value
    close = difflib.get_close_matches(str(value), list(options), n=1)
    fix = f"did you mean --{name} {close[0]}?" if close else f"use one of {', '.join(options)}"
    raise BundleInputError(name, f"unknown value {value!r} (one of {', '.join(options)})", fix)


def fraction(value: object, name: str, example: object) -> float:
    """``value`` as a float in [0, 1) (e.g. a window overlap); else a ``BundleInputError`` for ``name``."""
    number = _number(value)
    if number is None or not 0.0 <= number < 1.0:
        raise BundleInputError(name, f"must be in [0, 1), got {value!r}", f"pass e.g. --{name} {example}")
    return number


#: The most network passes per pixel that a sliding-window overlap may cost (each pixel is computed about
#: ``(1 / (1 - overlap)) ** dims`` times: 1.78 at the default 0.25 in 2D, 16 at 0.75); above it a run would take
#: many times longer for a blend that no longer changes.
MAX_PASSES_PER_PIXEL = 16


def window_step(roi: int, overlap: float) -> int:
    """The step between windows of size ``roi`` along one axis, as MONAI's sliding window computes it."""
    return max(int(roi * (1.0 - overlap)), 1)


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """How many windows of ``roi`` a sliding window with ``overlap`` runs on an image of ``shape`` (MONAI's grid)."""
    count = 1
    for size, r in zip(shape, roi):
        count *= math.ceil(max(int(size) - int(r), 0) / window_step(int(r), overlap)) + 1
    return count


def check_window_count(roi: Sequence[int], overlap: float) -> None:
    """Refuse an overlap that runs the network more than :data:`MAX_PASSES_PER_PIXEL` times per pixel, naming the
    window count it would take on an image of twice the window."""
    passes = math.prod(int(r) / window_step(int(r), overlap) for r in roi)
    if passes > MAX_PASSES_PER_PIXEL:
        example = [2 * int(r) for r in roi]
        many, few = window_count(example, roi, overlap), window_count(example, roi, 0.25)
        shape = "x".join(str(s) for s in example)
        raise BundleInputError(
            "overlap",
            f"{overlap} computes each pixel {passes:.0f} times ({many} windows on a {shape} image instead of {few} "
            f"at 0.25; at most {MAX_PASSES_PER_PIXEL} passes are allowed)",
            "pass e.g. --overlap 0.25 (at most 0.75 for 2D windows)",
        )


def check_device(device: object) -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine; else a ``BundleInputError`` for ``device``."""
    try:
        device = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as e:
        raise BundleInputError("device", f"is not a device name ({device!r})", "pass --device cpu or cuda") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BundleInputError("device", f"is {device}, but no CUDA GPU is visible", "drop --device (or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            problem = f"is {device}, but there are {torch.cuda.device_count()} GPU(s)"
            raise BundleInputError("device", problem, f"pass --device cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise BundleInputError("device", "is mps, but no Apple GPU is available", "drop --device (or cpu)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise BundleInputError("device", f"is {device}, which this bundle does not run on", "pass --device cpu or cuda")
    return device


def _command_line_text(name: str) -> str | None:
    """The text given after ``--name`` (or ``--name=``) on this process's command line, or None."""
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg in flags and i + 1 < len(args):
            return args[i + 1]
        flag, equals, text = arg.partition("=")
        if equals and flag in flags:
            return text
    return None


def path_setting(value: object, name: str) -> str:
    """A path setting (``dataset_dir``, ``output_dir``, ``ckpt_path``) as the string the user typed.

    ``python -m bundle`` and ``python -m monai.bundle run`` both parse flags with fire, which turns
    ``--dataset_dir 20240115`` into an int, ``--dataset_dir 2024.10`` into the float 2024.1 and
    ``--dataset_dir scan,v2`` into a tuple; the text is taken back from the command line where it is there, else
    rebuilt (a tuple's parts joined by commas). An empty path is refused.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        typed = _command_line_text(name)
        if typed is not None and typed.strip():
            value = typed
        elif isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            raise BundleInputError(name, f"must be a path, got {value!r}", f"pass --{name} with a folder or file")
    if not value.strip():
        raise BundleInputError(name, "is empty", f"pass --{name} with a folder or file (e.g. --{name} out)")
    return value


def output_folder(output_dir: object, name: str = "output_dir") -> str:
    """``output_dir`` as a path setting (:func:`path_setting`), with the temporaries that killed runs left in it
    removed (the folder itself is made when the first result is written)."""
    folder = path_setting(output_dir, name)
    remove_stale_temporaries(folder)
    return folder


def check_output_dir(output_dir: str | os.PathLike) -> str:
    """Create ``output_dir`` if needed and check that a file can be written in it; return it as a string."""
    folder = make_output_folder(output_folder(output_dir))
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
    dims = spatial_dimensions(spatial_dims)
    integer(epochs, "epochs", 1, 100)
    integer(batch_size, "batch_size", 1, 2)
    real(learning_rate, "learning_rate", 0.001)
    real(weight_decay, "weight_decay", 1e-05, positive=False)
    spatial_size(patch_size, "patch_size", dims, TRAINING_PATCH_SIDE[dims])
    integer(samples_per_section, "samples_per_section", 1, 4)
    integer(val_interval, "val_interval", 1, 5)
    integer(num_workers, "num_workers", 0, 0)
    if output_dir is not None:
        check_output_dir(output_dir)
    return True
