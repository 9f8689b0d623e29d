# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Blockwise inference of large zarr volumes on a Dask cluster (``configs/inference_dask.json``).

A volume is cut into chunk-aligned blocks (``scripts.blockwise.blocks``); Dask workers infer them side by side, each writing
its block straight into the output zarr and marking it done, so Dask's own scheduling, retries after a lost worker
and memory management apply, and a rerun after a killed job skips the blocks already written.

Same answer as one process: a 2D network's blocks are whole sections along z. Normalization, MONAI's window grid
(``SliceInferer`` runs each section through its own ``SlidingWindowInferer``), blending, TTA and precision are
per section, so each section is computed exactly as whole-volume inference computes it and the probability is
bit-identical (for the same device and the same PyTorch build). No halo is needed: the network never looks
across sections. 3D networks are refused (their windows would need a z-halo and the whole-volume window grid).

Cells: each block is segmented on its own (``scripts.instances.segment_cells``); labels are made unique in the
volume by per-block offsets, and in "3d" mode cells cut by a block face are joined across it
(``scripts.blockwise.stitching``). In "2d" mode blocks are whole sections and the cells equal whole-volume ones exactly.

Every stage writes into a hidden ``.<result>.blocks/`` folder beside the result (``settings.json``, one marker per
finished block, the zarr being written); the finished zarr is moved into place (``<output_dir>/<stem>_prob.zarr``,
``_seg.zarr``) only when all its blocks are done.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from distributed import WorkerPlugin
from torch import nn

from ..errors import BundleInputError
from ..inferers import MembraneInferer
from ..instances import resolve_instance_mode, seed_options, segment_cells
from ..io import PixelSize, create_zarr, finalize_zarr, image_stem, is_zarr, open_zarr, read_pixel_size, zarr_spacing
from ..morphology import block_volume_sums, cell_table, merged_volume_rows, write_cell_table
from ..outputs import result_path
from ..planes import check_sections_only, log_sections_only
from ..progress import bar
from ..scale import ZoomPolicy, pick_sections, table_spacing
from ..settings import check_device, choice, integer, output_folder
from ..transforms import TARGETS, normalize_sections
from .blocks import Block, BlockLedger, block_faces, block_shape, plan_blocks
from .stitching import block_offsets, core_labels, face_matches, merged_labels, relabel

PLUGIN = "fusionnet-inference"
BLOCKWISE_MODES = ("2d", "3d", "none")
logger = logging.getLogger(__name__)


def network_digest(network: nn.Module) -> str:
    """SHA-256 of a network's weights (names and values), to tell the results of other weights apart."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker_device(kind: str, worker_name: object) -> torch.device:
    """The device a worker runs the network on: the CPU, or for ``kind`` "cuda" one GPU per worker (local worker
    ``i`` takes GPU ``i`` modulo the GPUs it sees; other workers their current GPU, e.g. as dask-cuda sets it)."""
    if kind != "cuda":
        return torch.device(kind)
    if not torch.cuda.is_available():
        raise BundleInputError("device", "a Dask worker sees no CUDA GPU", "start GPU workers, or pass --device cpu")
    index = worker_name % torch.cuda.device_count() if isinstance(worker_name, int) else torch.cuda.current_device()
    return torch.device("cuda", index)


class InferencePlugin(WorkerPlugin):
    """The network and inferer on each Dask worker, loaded once per worker (and again on a worker that replaces
    a lost one), never per block.

    Args:
        network: the network of inference.json (weights loaded, prepared); sent to each worker once.
        inferer: inference.json's ``MembraneInferer``.
        device_type: "cpu" or "cuda" (see :func:`worker_device`).
        host_threads: task threads of all the cluster's workers on each host (``scripts.blockwise.scheduler.host_threads``):
            a worker's PyTorch threads are its host's cores over that count, so that several worker processes on
            one machine share its cores instead of each taking all of them.
    """

    name = PLUGIN

    def __init__(
        self, network: nn.Module, inferer: MembraneInferer, device_type: str, host_threads: dict[str, int]
    ) -> None:
        buffer = io.BytesIO()
        self.scripted = isinstance(network, torch.jit.ScriptModule)
        (torch.jit.save if self.scripted else torch.save)(network, buffer)
        self.weights = buffer.getvalue()
        self.inferer, self.device_type, self.host_threads = inferer, device_type, host_threads
        self.network: nn.Module | None = None
        self.device = torch.device("cpu")

    def setup(self, worker) -> None:  # type: ignore[no-untyped-def]
        # the network is loaded by the first block (in a task thread), not here: setup runs on the worker's event
        # loop, which a slow load (imports, GPU start) would stall, and Dask would take the worker for lost
        from distributed.comm import get_address_host

        self.worker_name, self.lock = worker.name, threading.Lock()
        # a worker that joined after the job started counts only its own task threads
        self.task_threads = self.host_threads.get(get_address_host(worker.address), worker.state.nthreads)

    def model(self) -> nn.Module:
        """The network on this worker's device, loaded on first use."""
        with self.lock:
            if self.network is None:
                from monai.utils import set_determinism

                # Dask's nanny starts workers with OMP_NUM_THREADS=1; convolutions should use the worker's share of
                # its host's cores (more threads than cores made two 1-thread workers on 2 cores 2x slower than one)
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, self.task_threads)))
                self.device = worker_device(self.device_type, self.worker_name)
                buffer = io.BytesIO(self.weights)
                if self.scripted:
                    network = torch.jit.load(buffer, map_location=self.device)
                else:  # the bytes are this job's own network, pickled by the client: not an untrusted file
                    network = torch.load(buffer, map_location=self.device, weights_only=False)
                set_determinism(seed=0)  # as inference.json's initialize: deterministic cuDNN algorithms
                self.network = network.eval()
            return self.network

    def probability(self, image: np.ndarray, zoom: Sequence[float] | None = None) -> np.ndarray:
        """Membrane probability of ``(Z, Y, X)`` whole sections, ``(Z, Y, X)`` float32 in [0, 1], computed as
        inference.json computes it: per-section normalization, then the inferer on ``(1, 1, Z, Y, X)`` at
        ``zoom`` (whole sections are resampled, so blocks need no halo in y and x)."""
        network = self.model()
        x = normalize_sections(image.astype(np.float32, copy=False))[None, None].to(self.device)
        with torch.inference_mode():
            prob = self.inferer(x, network, zoom=zoom)[0, 0].float().cpu().numpy()
        return np.clip(prob, 0.0, 1.0)


def _plugin() -> InferencePlugin:
    from distributed import get_worker

    return get_worker().plugins[PLUGIN]


# ------------------------------------------------------------------------------------ block tasks (run on workers)
def probability_block(block: Block, source, target, ledger: BlockLedger, zoom: Sequence[float] | None = None) -> None:
    """Infer one block of whole sections of ``source`` into ``target`` (zarr arrays) at ``zoom``, then mark it
    done."""
    target[block.region] = _plugin().probability(np.asarray(source[block.region]), zoom)
    ledger.mark(block.index)


def label_block(block: Block, prob, labels, ledger: BlockLedger, mode: str, options: dict, halo: int) -> int:
    """Cells of one block of the probability, segmented with ``halo`` voxels of context and labelled ``1..n`` on
    their own, into ``labels``; returns ``n``."""
    grown, core = block.with_halo(halo, prob.shape)
    cells = core_labels(segment_cells(np.asarray(prob[grown]), mode, **options)[core])
    labels[block.region] = cells
    count = int(cells.max(initial=0))
    ledger.mark(block.index, count)
    return count


def _plane(block: Block, axis: int, last: bool) -> tuple[slice, ...]:
    """The block's last (or first) voxel plane along ``axis``."""
    region = list(block.region)
    edge = region[axis].stop - 1 if last else region[axis].start
    region[axis] = slice(edge, edge + 1)
    return tuple(region)


def face_block(face: tuple[int, Block, Block], labels, offsets: np.ndarray) -> np.ndarray:
    """The label pairs joined across one block face (``scripts.blockwise.stitching.face_matches``), in volume labels."""
    axis, before, after = face
    a = relabel(labels[_plane(before, axis, True)], offsets[before.index])
    b = relabel(labels[_plane(after, axis, False)], offsets[after.index])
    return face_matches(a, b)


def cells_block(
    block: Block, labels, seg, ledger: BlockLedger, offsets: np.ndarray, lookup: np.ndarray | None, mode: str, spacing
) -> None:
    """Write one block's cells with their volume ids into ``seg``; its marker holds its part of the cell table."""
    cells = relabel(labels[block.region], offsets[block.index], lookup)
    seg[block.region] = cells
    if mode == "3d":
        rows: object = block_volume_sums(cells, [r.start for r in block.region])
    else:
        rows = [{**row, "slice": row["slice"] + block.region[0].start} for row in cell_table(cells, "2d", spacing)]
    ledger.mark(block.index, rows)


# ----------------------------------------------------------------------------------------- the driver (the client)
def _run_blocks(client, function: Callable, blocks: Sequence, ledger: BlockLedger, name: str = "", **kwargs) -> list:
    """Run ``function(block, ..., ledger=ledger, **kwargs)`` on the cluster for the blocks not yet done; returns
    every block's marked result, in block order. A bar named ``name`` counts the blocks as they finish (those a
    resumed run finds done included), with the rate and time left (``scripts.progress.bar``); the first block
    that fails raises its error here."""
    from distributed import as_completed

    todo = [b for b in blocks if not ledger.done(b.index)]
    logger.info("%s: %d of %d blocks to do", ledger.folder.name, len(todo), len(blocks))
    if todo:
        futures = client.map(function, todo, ledger=ledger, pure=False, **kwargs)
        with bar(total=len(blocks), name=name, unit="block", initial=len(blocks) - len(todo)) as done:
            for future in as_completed(futures):
                future.result()  # raises a block's error, as gathering all of them did
                done.update(1)
    return [ledger.result(b.index) for b in blocks]


def _work_array(ledger: BlockLedger, shape, dtype, chunks, spacing, pixel_size=None):
    """The zarr a stage writes into, ``<ledger>/data.zarr``: made afresh with the ledger, else reopened to resume
    (a ledger whose data is gone starts again)."""
    data = ledger.folder / "data.zarr"
    if not ledger.fresh and not is_zarr(data):
        ledger.reset()
    if ledger.fresh:
        create_zarr(data, shape, dtype, chunks=chunks, spacing=spacing, pixel_size=pixel_size)
        finalize_zarr(data)  # in place at once: the blocks written so far must outlive a killed job
        ledger.fresh = False
    return open_zarr(data, writable=True)  # workers write their blocks into it


def _publish(ledger: BlockLedger, result: str) -> None:
    """Move a finished stage's zarr into place at ``result`` (replacing an older one) and mark the stage done."""
    if os.path.isdir(result) and not os.path.islink(result):
        shutil.rmtree(result)
    elif os.path.lexists(result):
        os.remove(result)
    os.replace(ledger.folder / "data.zarr", result)
    ledger.mark("complete")


def _ledger_folder(result: str, stage: str = "") -> Path:
    path = Path(result)
    return path.parent / f".{path.name}.blocks" / stage


class BlockwiseSegmenter:
    """``configs/inference_dask.json``: inference.json's results for large zarr / OME-Zarr volumes, block by block
    on a Dask cluster.

    For every volume ``X.zarr`` it writes ``X_prob.zarr`` (float32 membrane probability, the input's chunks),
    ``X_seg.zarr`` (uint32 cells) and ``X_cells.csv``, as OME-Zarr. See the module docstring for the design.

    Args:
        network: a 2D network (weights loaded), sent once to each worker.
        inferer: the sliding-window inferer of inference.json.
        output_dir: folder for the results.
        scheduler: "local:N" (a LocalCluster of N worker processes) or a scheduler address "tcp://host:8786".
        block_size: ``(z, y, x)`` block size, or one number, or None for the input's chunks; rounded up to whole
            chunks. The probability uses blocks of ``z`` whole sections; cells in "3d" mode use the 3D blocks.
        device: "cpu" or "cuda" (the device type workers use; one GPU per worker).
        instance_mode: "2d" (per section, identical to whole-volume inference), "3d" (stitched across blocks;
            no agglomeration), "none", or "auto" ("2d": the probability here is the xy map).
        seed_threshold, min_seed_size, seeds, seed_distance: watershed seeds, see ``scripts.instances``.
        target: "foreground" maps are segmented as objects (see ``scripts.writers.SaveEMResultsd``).
        memory_limit: per worker of a LocalCluster (Dask's, e.g. "4GB" or "auto").
        cell_halo: voxels of context around each block for "3d" cells (``scripts.blockwise.stitching.core_labels``); about
            a cell radius, so that every cell cut by a face has its seed on both sides.
        zoom_policy: chooses each volume's zoom (``scripts.scale.ZoomPolicy``) from its pixel size and a few of its
            sections; None runs the network on the input's own grid.
        planes: "auto" or "xy" (blocks of whole sections segment along xy only; "xyz" is refused).
    """

    def __init__(
        self,
        network: nn.Module,
        inferer: MembraneInferer,
        output_dir: str,
        scheduler: str = "local:2",
        block_size: Sequence[int | None] | int | None = None,
        device: torch.device | str = "cpu",
        instance_mode: str = "2d",
        seed_threshold: float = 0.5,
        min_seed_size: int = 16,
        seeds: str = "components",
        seed_distance: float = 2.0,
        target: str = "membrane",
        memory_limit: str | int = "auto",
        cell_halo: int = 16,
        zoom_policy: ZoomPolicy | None = None,
        planes: str = "auto",
    ) -> None:
        from .scheduler import local_workers

        check_sections_only(planes, "Dask blockwise")
        instance_mode = resolve_instance_mode(instance_mode, three_planes=False)  # xy only here
        if inferer.spatial_dims != 2:
            raise BundleInputError(
                "spatial_dims",
                "blockwise inference runs 2D networks only (a 3D network's windows would need a z-halo)",
                "use configs/inference_stream.json for a 3D network, or a 2D network here",
            )
        self.network, self.inferer = network.eval(), inferer
        self.device = check_device(device)
        self.output_dir = output_folder(output_dir)
        local_workers(scheduler)  # an unknown scheduler setting is refused here, before any work
        self.scheduler, self.memory_limit = str(scheduler), memory_limit
        self.block_size = block_size
        self.cell_halo = integer(cell_halo, "cell_halo", 0, 16)
        self.zoom_policy = zoom_policy
        self.instance_mode = choice(instance_mode, "instance_mode", BLOCKWISE_MODES)
        target = choice(target, "target", TARGETS)
        self.segment_options = seed_options(seed_threshold, min_seed_size, seeds, seed_distance, target == "foreground")

    def run(self, paths: Sequence[str]) -> list[str]:
        """Segment every volume in ``paths`` on the cluster; returns their ``_prob.zarr`` paths."""
        from .scheduler import dask_client, host_threads

        with dask_client(self.scheduler, self.memory_limit) as client:
            plugin = InferencePlugin(self.network, self.inferer, self.device.type, host_threads(client))
            client.register_plugin(plugin)
            return [self.segment(client, str(p)) for p in paths]

    def inference_settings(self) -> dict:
        """What the probability depends on besides the input: the weights and the inferer's settings."""
        inferer = self.inferer
        return {
            "network": network_digest(self.network),
            "roi_size": list(inferer.roi_size),
            "tta": inferer.tta,
            "precision": inferer.precision,
            "windows": dict(inferer.window_kwargs),
            "device": self.device.type,
        }

    def choose_zoom(self, path: str, source, pixel_size: PixelSize | None) -> tuple[float, ...] | None:
        """The zoom of one volume (``scripts.scale.ZoomPolicy``), from its pixel size and a few of its sections."""
        if self.zoom_policy is None:
            return None

        def sections() -> torch.Tensor:
            picked = [
                normalize_sections(np.asarray(source[z], dtype=np.float32))[None]
                for z in pick_sections(source.shape[0])
            ]
            return torch.stack(picked).float()  # (n, 1, Y, X)

        choice_ = self.zoom_policy.choose(os.path.basename(path), sections, pixel_size)
        log_sections_only(os.path.basename(path), choice_.pixel_size_nm, "Dask blockwise")
        return choice_.zoom

    def segment(self, client, path: str) -> str:
        """Write the results of one volume; returns the path of its ``_prob.zarr``."""
        source = open_zarr(path)
        if source.ndim != 3:
            raise BundleInputError(path, f"is a single image {source.shape}", "use configs/inference.json for it")
        shape, chunks, spacing = tuple(source.shape), tuple(source.chunks), zarr_spacing(path)
        stem = image_stem(path)
        prob_path = result_path(self.output_dir, stem, "_prob", "zarr")
        sections = block_shape(shape, chunks, self._z_blocks(chunks))
        pixel_size = read_pixel_size(path)  # results keep it; the cell table is in nm
        zoom = self.choose_zoom(path, source, pixel_size)
        settings = {
            "input": os.path.abspath(path),
            "shape": shape,
            "chunks": chunks,
            "blocks": sections,
            "zoom": None if zoom is None else list(zoom),
            **self.inference_settings(),
        }
        ledger = BlockLedger(_ledger_folder(prob_path), settings)
        if not (ledger.done("complete") and is_zarr(prob_path)):
            target = _work_array(ledger, shape, np.float32, chunks, spacing, pixel_size)
            blocks = plan_blocks(shape, sections)
            _run_blocks(
                client,
                probability_block,
                blocks,
                ledger,
                f"{stem}: probability",
                source=source,
                target=target,
                zoom=zoom,
            )
            _publish(ledger, prob_path)
        if self.instance_mode != "none":
            self.cells(client, prob_path, stem, settings, spacing, pixel_size)
        return prob_path

    def _z_blocks(self, chunks: Sequence[int]) -> list[int | None]:
        """The probability's block size: whole sections, ``block_size``'s z (default: the z chunk) at a time."""
        size = self.block_size
        z = size[0] if isinstance(size, (list, tuple)) and size else size
        return [int(chunks[0]) if z is None else z, None, None]

    def cells(
        self, client, prob_path: str, stem: str, prob_settings: dict, spacing, pixel_size: PixelSize | None = None
    ) -> None:
        """``<stem>_seg.zarr`` and ``<stem>_cells.csv`` from the finished probability, block by block; ``spacing``
        and ``pixel_size`` are stored with the results, and the table's physical columns are in nm
        (``scripts.scale.table_spacing``)."""
        table = table_spacing(pixel_size)
        seg_path = result_path(self.output_dir, stem, "_seg", "zarr")
        prob = open_zarr(prob_path)
        shape, chunks = tuple(prob.shape), tuple(prob.chunks)
        mode = self.instance_mode
        size = block_shape(shape, chunks, self.block_size if mode == "3d" else self._z_blocks(chunks))
        blocks = plan_blocks(shape, size)
        halo = self.cell_halo if mode == "3d" else 0  # 2D cells never cross a section, nor a block of sections
        label_settings = {"prob": prob_settings, "mode": mode, "options": self.segment_options, "blocks": size,
                          "halo": halo}  # fmt: skip
        cell_ledger = BlockLedger(_ledger_folder(seg_path, "cells"), {"labels": label_settings, "spacing": table})
        if cell_ledger.done("complete") and is_zarr(seg_path):
            return
        label_ledger = BlockLedger(_ledger_folder(seg_path, "labels"), label_settings)
        labels = _work_array(label_ledger, shape, np.uint32, chunks, spacing, pixel_size)
        counts = _run_blocks(client, label_block, blocks, label_ledger, f"{stem}: cells", prob=prob, labels=labels,
                             mode=mode, options=self.segment_options, halo=halo)  # fmt: skip
        offsets = block_offsets(counts)
        lookup = None
        if mode == "3d":
            faces = block_faces(blocks)
            matches = client.gather(client.map(face_block, faces, labels=labels, offsets=offsets, pure=False))
            lookup = merged_labels(int(sum(counts)), np.concatenate([np.zeros((0, 2), np.int64), *matches]))
            lookup = client.scatter(lookup, broadcast=True)
        seg = _work_array(cell_ledger, shape, np.uint32, chunks, spacing, pixel_size)
        parts = _run_blocks(client, cells_block, blocks, cell_ledger, f"{stem}: cell table", labels=labels, seg=seg,
                            offsets=offsets, lookup=lookup, mode=mode, spacing=table)  # fmt: skip
        rows = merged_volume_rows(parts, table) if mode == "3d" else [row for part in parts for row in part]
        write_cell_table(result_path(self.output_dir, stem, "_cells", "csv"), rows, mode)
        _publish(cell_ledger, seg_path)
        shutil.rmtree(label_ledger.folder / "data.zarr", ignore_errors=True)  # the per-block labels are spent
