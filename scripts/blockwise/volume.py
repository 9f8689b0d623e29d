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

A near-isotropic volume segmented along three planes (``scripts.planes``) keeps that rule by making every plane's
blocks whole sections of that plane: blocks of z for xy (which also write the normalized volume to a work zarr),
then bands of y of the normalized volume for xz and bands of x for yz, each map in its own work zarr, and a last
pass takes their mean. Each section of each plane is computed as whole-volume inference computes it, so the map is
the whole volume's within float rounding (the same arithmetic; the sum in the same order).

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
from ..instances import (
    INSTANCE_MODES,
    describe_options,
    instance_options,
    resolve_instance_mode,
    seed_options,
    segment_cells,
)
from ..io import PixelSize, create_zarr, finalize_zarr, image_stem, is_zarr, open_zarr, read_pixel_size, zarr_spacing
from ..morphology import block_volume_sums, cell_table, merged_volume_rows, write_cell_table
from ..outputs import result_path
from ..planes import PLANES_MODES, anisotropy_window, as_plane, from_plane, planned_volume_zoom
from ..progress import bar
from ..scale import ZoomPolicy, pick_sections, table_spacing
from ..settings import check_device, choice, integer, output_folder
from ..transforms import TARGETS, normalize_sections
from .blocks import Block, BlockLedger, block_faces, block_shape, plan_blocks
from .stitching import block_offsets, core_labels, face_matches, merged_labels, relabel

PLUGIN = "fusionnet-inference"
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

    def plane_map(self, normalized: np.ndarray, plane: str, volume_zoom: Sequence[float]) -> np.ndarray:
        """The 2D network's map of ``normalized`` ``(Z, Y', X')`` (a part of a normalized volume made of whole
        sections of ``plane``: a block of z for xy, a band of y for xz, of x for yz) along ``plane`` at its zoom
        from ``volume_zoom`` ``(z, y, x)``, on the same axes; float32, one term of the three-plane mean, computed as
        whole-volume inference computes it (``MembraneInferer.plane_probability``)."""
        network = self.model()
        sections = as_plane(torch.from_numpy(normalized)[None, None].to(self.device), plane).contiguous()
        with torch.inference_mode():
            prob = self.inferer.plane_probability(
                sections, self.inferer.predictor(network, self.device), volume_zoom, plane
            )
        return from_plane(prob, plane)[0, 0].float().cpu().numpy()


def _plugin() -> InferencePlugin:
    from distributed import get_worker

    return get_worker().plugins[PLUGIN]


# ------------------------------------------------------------------------------------ block tasks (run on workers)
def probability_block(block: Block, source, target, ledger: BlockLedger, zoom: Sequence[float] | None = None) -> None:
    """Infer one block of whole sections of ``source`` into ``target`` (zarr arrays) at ``zoom``, then mark it
    done."""
    target[block.region] = _plugin().probability(np.asarray(source[block.region]), zoom)
    ledger.mark(block.index)


def xy_block(block: Block, source, normalized, target, ledger: BlockLedger, volume_zoom: Sequence[float]) -> None:
    """Three planes, first pass: one block of whole sections of ``source``, normalized, into ``normalized`` and its
    xy map into ``target`` (zarr arrays); then mark it done."""
    sections = normalize_sections(np.asarray(source[block.region]).astype(np.float32, copy=False)).numpy()
    normalized[block.region] = sections
    target[block.region] = _plugin().plane_map(sections, "xy", volume_zoom)
    ledger.mark(block.index)


def plane_block(
    block: Block, normalized, target, ledger: BlockLedger, plane: str, volume_zoom: Sequence[float]
) -> None:
    """Three planes, xz or yz pass: the map of one band of ``normalized`` (all of z and of the plane's other axis)
    along ``plane`` into ``target``; then mark it done."""
    target[block.region] = _plugin().plane_map(np.asarray(normalized[block.region]), plane, volume_zoom)
    ledger.mark(block.index)


def mean_block(block: Block, maps: Sequence, target, ledger: BlockLedger) -> None:
    """Three planes, last pass: the mean of the xy, xz and yz ``maps`` over one block, clipped to [0, 1], into
    ``target``; summed in whole-volume inference's order, so the result is its own."""
    total = np.asarray(maps[0][block.region], dtype=np.float32)
    for plane_map in maps[1:]:
        total = total + np.asarray(plane_map[block.region], dtype=np.float32)
    target[block.region] = np.clip(total / np.float32(len(maps)), 0.0, 1.0)
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
    logger.info("%s: %d of %d blocks to do", name or ledger.folder.name, len(todo), len(blocks))
    if todo:
        futures = client.map(function, todo, ledger=ledger, pure=False, **kwargs)
        with bar(total=len(blocks), name=name, unit="block", initial=len(blocks) - len(todo)) as done:
            for future in as_completed(futures):
                future.result()  # raises a block's error, as gathering all of them did
                done.update(1)
    return [ledger.result(b.index) for b in blocks]


def _work_arrays(ledger: BlockLedger, shape, dtype, chunks, spacing, pixel_size=None, names=("data.zarr",)) -> list:
    """The zarr arrays a stage writes into, ``<ledger>/<name>`` for each of ``names``: made afresh with the ledger,
    else reopened to resume (a ledger with any of them gone starts again)."""
    paths = [ledger.folder / name for name in names]
    if not ledger.fresh and not all(is_zarr(path) for path in paths):
        ledger.reset()
    if ledger.fresh:
        for path in paths:
            create_zarr(path, shape, dtype, chunks=chunks, spacing=spacing, pixel_size=pixel_size)
            finalize_zarr(path)  # in place at once: the blocks written so far must outlive a killed job
        ledger.fresh = False
    return [open_zarr(path, writable=True) for path in paths]  # workers write their blocks into them


def _work_array(ledger: BlockLedger, shape, dtype, chunks, spacing, pixel_size=None):
    """The one zarr array ``<ledger>/data.zarr`` of a stage (:func:`_work_arrays`)."""
    return _work_arrays(ledger, shape, dtype, chunks, spacing, pixel_size)[0]


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
        instance_mode: "2d" (per section, identical to whole-volume inference), "3d" (each block with a halo,
            agglomerated as ``scripts.instances.instance_options`` says, stitched across block faces), "none", or
            "auto" ("3d" neurons for a volume segmented along three planes, else "2d").
        seed_threshold, min_seed_size, seeds, seed_distance, agglomeration: watershed seeds and the merging of
            3D fragments, see ``scripts.instances`` ("auto": as whole-volume inference).
        target: "foreground" maps are segmented as objects (see ``scripts.writers.SaveEMResultsd``).
        memory_limit: per worker of a LocalCluster (Dask's, e.g. "4GB" or "auto").
        cell_halo: voxels of context around each block for "3d" cells (``scripts.blockwise.stitching.core_labels``); about
            a cell radius, so that every cell cut by a face has its seed on both sides.
        zoom_policy: chooses each volume's zoom (``scripts.scale.ZoomPolicy``) from its pixel size and a few of its
            sections; None runs the network on the input's own grid.
        planes: "auto", "xy" or "xyz" (``scripts.planes``): three planes run as three passes of blocks, whole
            sections of each plane (z blocks for xy, y bands for xz, x bands for yz, ``block_size``'s z, y and x),
            through normalized sections and each plane's map in work zarrs beside the result (about 16 bytes a
            voxel while it runs), then their mean.
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
        agglomeration: object = "auto",
    ) -> None:
        from .scheduler import local_workers

        self.planes = choice(planes, "planes", PLANES_MODES)
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
        self.instance_mode = choice(instance_mode, "instance_mode", INSTANCE_MODES)
        target = choice(target, "target", TARGETS)
        self.segment_options = seed_options(
            seed_threshold, min_seed_size, seeds, seed_distance, target == "foreground", agglomeration
        )

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

    def choose_zoom(
        self, path: str, source, pixel_size: PixelSize | None
    ) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
        """The zoom of one volume (``scripts.scale.ZoomPolicy``) from its pixel size and a few of its sections, and
        its planes (``scripts.planes.planned_volume_zoom``, logged as whole-volume inference logs them).

        Returns:
            the 2D zoom (None: the volume's own grid) and, for three planes, the volume's ``(z, y, x)`` zoom.
        """
        name = os.path.basename(path)
        zoom, pixel_size_nm = None, None if pixel_size is None else pixel_size.nm
        if self.zoom_policy is not None:

            def sections() -> torch.Tensor:
                picked = [
                    normalize_sections(np.asarray(source[z], dtype=np.float32))[None]
                    for z in pick_sections(source.shape[0])
                ]
                return torch.stack(picked).float()  # (n, 1, Y, X)

            choice_ = self.zoom_policy.choose(name, sections, pixel_size)
            zoom, pixel_size_nm = choice_.zoom, choice_.pixel_size_nm

        def anisotropy_sections() -> np.ndarray:
            return np.asarray(source[anisotropy_window(source.shape)], dtype=np.float32)

        return zoom, planned_volume_zoom(
            name, self.planes, zoom, pixel_size_nm, source.shape[0], read=anisotropy_sections
        )

    def segment(self, client, path: str) -> str:
        """Write the results of one volume; returns the path of its ``_prob.zarr``."""
        source = open_zarr(path)
        if source.ndim != 3:
            raise BundleInputError(path, f"is a single image {source.shape}", "use configs/inference.json for it")
        shape, chunks, spacing = tuple(source.shape), tuple(source.chunks), zarr_spacing(path)
        stem = image_stem(path)
        prob_path = result_path(self.output_dir, stem, "_prob", "zarr")
        sections = block_shape(shape, chunks, self._bands(chunks))
        pixel_size = read_pixel_size(path)  # results keep it; the cell table is in nm
        zoom, volume_zoom = self.choose_zoom(path, source, pixel_size)
        settings = {
            "input": os.path.abspath(path),
            "shape": shape,
            "chunks": chunks,
            "blocks": sections,
            "zoom": None if zoom is None else list(zoom),
            "volume_zoom": None if volume_zoom is None else list(volume_zoom),
            **self.inference_settings(),
        }
        ledger = BlockLedger(_ledger_folder(prob_path), settings)
        if not (ledger.done("complete") and is_zarr(prob_path)):
            target = _work_array(ledger, shape, np.float32, chunks, spacing, pixel_size)
            blocks = plan_blocks(shape, sections)
            if volume_zoom is None:
                _run_blocks(client, probability_block, blocks, ledger, f"{stem}: probability", source=source,
                            target=target, zoom=zoom)  # fmt: skip
            else:
                maps = self._plane_maps(client, source, stem, prob_path, settings, volume_zoom, spacing)
                _run_blocks(client, mean_block, blocks, ledger, f"{stem}: mean of 3 planes", maps=maps, target=target)
            _publish(ledger, prob_path)
            for stage in ("xy", "xz", "yz"):  # the planes' work zarrs are spent
                shutil.rmtree(_ledger_folder(prob_path, stage), ignore_errors=True)
        mode = resolve_instance_mode(self.instance_mode, three_planes=volume_zoom is not None)
        if mode != "none":
            options = instance_options(self.segment_options, mode, self.instance_mode)
            logger.info("%s: cells in %s (%s)", stem, mode.upper(), describe_options(options))
            self.cells(client, prob_path, stem, settings, spacing, pixel_size, mode, options)
        return prob_path

    def _plane_maps(
        self, client, source, stem: str, prob_path: str, settings: dict, volume_zoom: Sequence[float], spacing
    ) -> list:
        """The xy, xz and yz maps of one volume in work zarrs beside ``prob_path`` (see the class docstring): xy
        over blocks of whole sections, which also leaves the normalized volume; xz over bands of y and yz over
        bands of x of it, every band holding whole sections of its plane. Each pass resumes on its own."""
        shape, chunks = tuple(source.shape), tuple(source.chunks)
        maps = []
        for axis, plane in enumerate(("xy", "xz", "yz")):  # each plane's sections are whole across two axes
            band = block_shape(shape, chunks, self._bands(chunks, axis))
            ledger = BlockLedger(_ledger_folder(prob_path, plane), {**settings, "plane": plane, "blocks": band})
            blocks = plan_blocks(shape, band)
            name = f"{stem}: {plane} sections"
            if plane == "xy":
                normalized, plane_map = _work_arrays(ledger, shape, np.float32, chunks, spacing,
                                                     names=("normalized.zarr", "data.zarr"))  # fmt: skip
                _run_blocks(client, xy_block, blocks, ledger, name, source=source, normalized=normalized,
                            target=plane_map, volume_zoom=volume_zoom)  # fmt: skip
            else:
                plane_map = _work_array(ledger, shape, np.float32, chunks, spacing)
                _run_blocks(client, plane_block, blocks, ledger, name, normalized=normalized, target=plane_map,
                            plane=plane, volume_zoom=volume_zoom)  # fmt: skip
            maps.append(plane_map)
        return maps

    def _bands(self, chunks: Sequence[int], axis: int = 0) -> list[int | None]:
        """Block size of whole sections of the plane normal to ``axis`` (0: xy, the probability's blocks; 1: xz;
        2: yz): ``block_size``'s size along ``axis`` (default: the chunk there), the whole of the other two."""
        size = self.block_size
        along = size[axis] if isinstance(size, (list, tuple)) and size else size
        return [(int(chunks[axis]) if along is None else along) if a == axis else None for a in range(3)]

    def cells(
        self,
        client,
        prob_path: str,
        stem: str,
        prob_settings: dict,
        spacing,
        pixel_size: PixelSize | None,
        mode: str,
        options: dict,
    ) -> None:
        """``<stem>_seg.zarr`` and ``<stem>_cells.csv`` from the finished probability, block by block, in ``mode``
        ("2d" or "3d") with the watershed ``options`` (``scripts.instances.segment_cells``); ``spacing`` and
        ``pixel_size`` are stored with the results, and the table's physical columns are in nm
        (``scripts.scale.table_spacing``)."""
        table = table_spacing(pixel_size)
        seg_path = result_path(self.output_dir, stem, "_seg", "zarr")
        prob = open_zarr(prob_path)
        shape, chunks = tuple(prob.shape), tuple(prob.chunks)
        size = block_shape(shape, chunks, self.block_size if mode == "3d" else self._bands(chunks))
        blocks = plan_blocks(shape, size)
        halo = self.cell_halo if mode == "3d" else 0  # 2D cells never cross a section, nor a block of sections
        label_settings = {"prob": prob_settings, "mode": mode, "options": options, "blocks": size,
                          "halo": halo}  # fmt: skip
        cell_ledger = BlockLedger(_ledger_folder(seg_path, "cells"), {"labels": label_settings, "spacing": table})
        if cell_ledger.done("complete") and is_zarr(seg_path):
            return
        label_ledger = BlockLedger(_ledger_folder(seg_path, "labels"), label_settings)
        labels = _work_array(label_ledger, shape, np.uint32, chunks, spacing, pixel_size)
        counts = _run_blocks(client, label_block, blocks, label_ledger, f"{stem}: cells", prob=prob, labels=labels,
                             mode=mode, options=options, halo=halo)  # fmt: skip
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
