# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Cutting a ``(Z, Y, X)`` volume into chunk-aligned blocks, and recording which blocks are done.

A block is a box of whole storage chunks, so two blocks never write into one chunk and workers can write their
blocks into one zarr array side by side. :class:`BlockLedger` marks each finished block with a small file written
atomically, so a run that was killed resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from ..errors import BundleInputError
from ..outputs import atomic_path, make_output_folder

Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Block:
    """One block of a ``(Z, Y, X)`` volume.

    Attributes:
        index: the block's number in :func:`plan_blocks` order (z-major).
        region: the voxels of the volume it covers, ``(z, y, x)`` slices.
        position: its ``(z, y, x)`` position in the grid of blocks.
    """

    index: int
    region: Region
    position: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` size of the block."""
        return tuple(s.stop - s.start for s in self.region)  # type: ignore[return-value]

    def with_halo(self, halo: int, shape: Sequence[int]) -> tuple[Region, Region]:
        """The block grown by ``halo`` voxels on every side (within a volume of ``shape``), and where the block
        itself lies inside that grown region: ``(grown, core)``."""
        grown = tuple(slice(max(0, r.start - halo), min(int(n), r.stop + halo)) for r, n in zip(self.region, shape))
        core = tuple(slice(r.start - g.start, r.stop - g.start) for r, g in zip(self.region, grown))
        return grown, core  # type: ignore[return-value]


def block_shape(
    shape: Sequence[int], chunks: Sequence[int], block_size: Sequence[int | None] | int | None = None
) -> tuple[int, int, int]:
    """The ``(z, y, x)`` block size for a volume of ``shape`` stored in ``chunks``.

    ``block_size`` None means one chunk; an int is the size along every axis; a list gives one size per axis
    (None or a size beyond the volume = the whole axis). Each size is rounded up to a whole number of chunks, so
    blocks never share a chunk.
    """
    shape, chunks = tuple(int(s) for s in shape), tuple(int(c) for c in chunks)
    if block_size is None:
        sizes: list[int | None] = list(chunks)
    elif isinstance(block_size, (int, float)) and not isinstance(block_size, bool):
        sizes = [int(block_size)] * 3
    elif isinstance(block_size, (list, tuple)) and len(block_size) == 3:
        sizes = [None if s is None else int(s) for s in block_size]
    else:
        raise BundleInputError(
            "block_size",
            f"must be a number or a list of 3 (z, y, x) sizes, got {block_size!r}",
            "pass e.g. [8,512,512]",
        )
    if any(s is not None and s < 1 for s in sizes):
        raise BundleInputError("block_size", f"sizes must be positive, got {block_size!r}", "pass e.g. [8,512,512]")
    result = []
    for size, extent, chunk in zip(sizes, shape, chunks):
        size = extent if size is None else min(size, extent)
        result.append(max(chunk, -(-size // chunk) * chunk))
    return tuple(result)  # type: ignore[return-value]


def plan_blocks(shape: Sequence[int], size: Sequence[int]) -> list[Block]:
    """The blocks of ``size`` that tile a ``(Z, Y, X)`` volume of ``shape`` (the last along each axis may be
    smaller), z-major."""
    starts = [range(0, int(extent), int(step)) for extent, step in zip(shape, size)]
    blocks = []
    for index, corner in enumerate(product(*starts)):
        region = tuple(slice(c, min(c + int(s), int(e))) for c, s, e in zip(corner, size, shape))
        position = tuple(c // int(s) for c, s in zip(corner, size))
        blocks.append(Block(index, region, position))  # type: ignore[arg-type]
    return blocks


def block_faces(blocks: Sequence[Block]) -> list[tuple[int, Block, Block]]:
    """Every pair of face-adjacent blocks as ``(axis, before, after)``: ``after`` follows ``before`` along
    ``axis``, and the face lies between plane ``before.region[axis].stop - 1`` and ``after.region[axis].start``."""
    by_position = {b.position: b for b in blocks}
    faces = []
    for block in blocks:
        for axis in range(3):
            step = tuple(p + (a == axis) for a, p in enumerate(block.position))
            if step in by_position:
                faces.append((axis, block, by_position[step]))
    return faces


class BlockLedger:
    """Which blocks of one stage of one output are done: a file ``<index>.json`` per finished block in
    ``folder``, written atomically after the block's data, holding what the block returned (e.g. its cell count).

    ``settings`` (JSON-serialisable) describe the work: markers left by a run with other settings (another
    checkpoint, input or block size) are removed when the ledger is opened, so they are never taken as done.
    """

    SETTINGS = "settings.json"

    def __init__(self, folder: str | os.PathLike, settings: dict) -> None:
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # as it reads back from the file
        self.fresh = not self._matches()
        if self.fresh:
            self.reset()

    def reset(self) -> None:
        """Forget every block: remove the folder and start it again with this ledger's settings."""
        shutil.rmtree(self.folder, ignore_errors=True)
        make_output_folder(self.folder)
        with atomic_path(self.folder / self.SETTINGS) as tmp:
            Path(tmp).write_text(json.dumps(self.settings, indent=1))
        self.fresh = True

    def _matches(self) -> bool:
        try:
            return json.loads((self.folder / self.SETTINGS).read_text()) == self.settings
        except (OSError, ValueError):
            return False

    def _marker(self, index: int | str) -> Path:
        return self.folder / f"{index}.json"

    def done(self, index: int | str) -> bool:
        """Whether block ``index`` (or a named step, e.g. "complete") was finished."""
        return self._marker(index).is_file()

    def result(self, index: int) -> object:
        """What block ``index`` returned when it was marked done."""
        return json.loads(self._marker(index).read_text())

    def mark(self, index: int | str, result: object = None) -> None:
        """Mark block ``index`` done, with its (JSON-serialisable) ``result``; atomic, so a marker is whole or
        absent."""
        with atomic_path(self._marker(index)) as tmp:
            Path(tmp).write_text(json.dumps(result))
