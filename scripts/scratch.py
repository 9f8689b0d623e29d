# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Volumes in scratch files beside the results, for streamed inference of stacks larger than memory: the
normalized sections and maps of three-plane inference (``scripts.streaming``) and the slab labels of 3D neurons
(``scripts.slab_neurons``)."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import BundleInputError
from .outputs import temporary_prefix


class ScratchVolume:
    """A volume of ``dtype`` in a file, read and written by index (``volume[z]``, ``volume[:, y0:y1] += part``).
    Each access maps the file only for its own duration: pages a long-lived mapping had touched would count towards
    the process's memory (RSS) until it ended, whatever the volume's size."""

    def __init__(self, path: str, shape: Sequence[int], dtype: np.dtype | type = np.float32) -> None:
        self.path, self.shape, self.dtype = path, tuple(int(n) for n in shape), np.dtype(dtype)

    def __getitem__(self, index: object) -> np.ndarray:
        view = np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape)
        part = np.array(view[index])  # type: ignore[index]
        del view
        return part

    def __setitem__(self, index: object, value: np.ndarray) -> None:
        view = np.memmap(self.path, dtype=self.dtype, mode="r+", shape=self.shape)
        view[index] = value  # type: ignore[index]
        view.flush()
        del view


@contextmanager
def scratch_volume(
    folder: str,
    stem: str,
    shape: Sequence[int],
    dtype: np.dtype | type = np.float32,
    purpose: str = "three planes",
    fix: str = "pass --planes xy",
) -> Iterator[ScratchVolume]:
    """A volume of ``shape`` and ``dtype`` on disk in ``folder`` (:class:`ScratchVolume`), removed when the block
    ends. Its file is named as ``scripts.outputs.atomic_path``'s temporaries, so a killed run's is removed by the
    next run (see ``remove_stale_temporaries``); its space is reserved first, so a full disk stops here, not
    midway, with a message naming the ``purpose`` and the ``fix`` that needs no scratch."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    fd, path = tempfile.mkstemp(
        prefix=temporary_prefix(Path(folder) / f"{stem}_scratch", len(".part") + 8), suffix=".part", dir=folder
    )
    try:
        try:
            if hasattr(os, "posix_fallocate"):  # Linux: the blocks themselves, not a sparse file
                os.posix_fallocate(fd, 0, max(size, 1))
            else:
                os.ftruncate(fd, max(size, 1))
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise BundleInputError(
                folder,
                f"has no room for {size / 2**30:.1f} GiB of scratch for the {purpose} of {stem}",
                f"free space, choose another --output_dir, or {fix}",
            ) from e
        finally:
            os.close(fd)
        yield ScratchVolume(path, shape, dtype)
    finally:
        os.remove(path)
