# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Blockwise inference on Dask (configs/inference_dask.json): block planning, stitching cells across blocks, and
runs on a 2-worker LocalCluster: the same answer as whole-volume inference, a worker killed mid-run, a rerun that
skips finished blocks."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, run_workflow, workflow
from scipy import ndimage
from scripts.blockwise import BlockwiseSegmenter
from scripts.blockwise.blocks import BlockLedger, block_faces, block_shape, plan_blocks
from scripts.blockwise.scheduler import host_threads
from scripts.blockwise.stitching import block_offsets, core_labels, face_matches, merged_labels, relabel
from scripts.inferers import MembraneInferer
from scripts.instances import segment_cells
from scripts.io import open_zarr
from scripts.isbi_metrics import rand_info_scores
from scripts.synthetic import make_em_stack
from scripts.transforms import boundaries_from_instances
from torch import nn

FEATURES = [4, 4, 8, 8, 16]
SHAPE, CHUNKS = (6, 96, 80), (2, 48, 40)  # three blocks of two whole sections; 2 x 2 chunks per section
SEGMENT = dict(seed_threshold=0.5, min_seed_size=4, seeds="distance", seed_distance=1.0)


# ------------------------------------------------------------------------------------------------ pure functions
def test_blocks_are_whole_chunks_and_tile_the_volume():
    size = block_shape((10, 100, 90), (4, 32, 32), [5, 40, None])
    assert size == (8, 64, 96)  # rounded up to whole chunks; None = the whole axis (also rounded to a chunk)
    assert block_shape((10, 100, 90), (4, 32, 32)) == (4, 32, 32)  # default: one chunk
    blocks = plan_blocks((10, 100, 90), size)
    covered = np.zeros((10, 100, 90), dtype=int)
    for b in blocks:
        covered[b.region] += 1
    assert (covered == 1).all() and len(blocks) == 2 * 2 * 1
    assert sorted((axis, a.index, b.index) for axis, a, b in block_faces(blocks)) == [
        (0, 0, 2), (0, 1, 3), (1, 0, 1), (1, 2, 3)
    ]  # fmt: skip


def test_ledger_forgets_blocks_of_other_settings(tmp_path: Path):
    ledger = BlockLedger(tmp_path / "l", {"network": "a"})
    ledger.mark(3, 17)
    assert BlockLedger(tmp_path / "l", {"network": "a"}).result(3) == 17
    assert not BlockLedger(tmp_path / "l", {"network": "b"}).done(3)


def test_face_matches_join_mutual_best_overlaps_only():
    """Dense neurons leave no boundary on a face: neuron 2 grazes it with 4 voxels that lie on neuron 1's
    continuation 5. Joining by overlap with the smaller alone joined 2 to 5 (merging neurons 1 and 2); only 1 and 5
    are each other's best."""
    before = np.ones((1, 10, 10), np.uint32)
    before[0, :2, :2] = 2
    after = np.full((1, 10, 10), 5, np.uint32)
    after[0, :, 8:] = 6  # neuron 1's neighbour, whose half on this side has no partner there
    before[0, :, 8:] = 3
    assert face_matches(before, after).tolist() == [[1, 5], [3, 6]]


def stitched_cells(
    prob: np.ndarray, size: tuple[int, int, int], merge: bool = True, halo: int = 16, options: dict = SEGMENT
) -> np.ndarray:
    """3D cells of ``prob`` block by block with the functions the Dask tasks use, in memory."""
    blocks = plan_blocks(prob.shape, size)
    local = []
    for b in blocks:
        grown, core = b.with_halo(halo, prob.shape)
        local.append(core_labels(segment_cells(prob[grown], "3d", **options)[core]))
    offsets = block_offsets([int(cells.max(initial=0)) for cells in local])
    volume = np.zeros(prob.shape, dtype=np.uint32)
    for b, cells, offset in zip(blocks, local, offsets):
        volume[b.region] = relabel(cells, offset)
    matches = [np.zeros((0, 2), np.int64)]
    for axis, before, after in block_faces(blocks) if merge else []:
        a, b = list(before.region), list(after.region)
        a[axis] = slice(a[axis].stop - 1, a[axis].stop)
        b[axis] = slice(b[axis].start, b[axis].start + 1)
        matches.append(face_matches(volume[tuple(a)], volume[tuple(b)]))
    return merged_labels(int(volume.max()), np.concatenate(matches))[volume]


def test_cells_stitched_across_blocks_score_as_whole_volume():
    """On generated 3D cells (a Voronoi tessellation) the stitched cells score the V_rand of whole-volume 3D cells
    against the truth (within 0.015: 0.9685 against 0.9806; joining every pair overlapping by half the smaller
    label scored 0.50 with dense labels), and joining across faces is what gets them there."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(1)
    shape = (32, 64, 64)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    truth = cKDTree(rng.uniform(0, 1, (24, 3)) * shape).query(grid)[1].reshape(shape) + 1
    prob = ndimage.gaussian_filter(boundaries_from_instances(truth, 3).astype(np.float32), 1.0)
    prob = np.clip(prob + rng.normal(0, 0.05, shape).astype(np.float32), 0, 1)
    whole = segment_cells(prob, "3d", **SEGMENT)
    stitched = stitched_cells(prob, (16, 32, 32))
    assert len(np.unique(stitched[stitched > 0])) == stitched.max()  # ids 1..M, each used
    whole_score, stitched_score = rand_info_scores(truth, whole)[0], rand_info_scores(truth, stitched)[0]
    assert whole_score > 0.9 and abs(stitched_score - whole_score) < 0.015, (whole_score, stitched_score)
    # joining across faces, and the halo, are what get them there
    assert rand_info_scores(truth, stitched_cells(prob, (16, 32, 32), merge=False))[0] < stitched_score - 0.1
    assert rand_info_scores(truth, stitched_cells(prob, (16, 32, 32), halo=0))[0] < stitched_score - 0.1


@pytest.mark.skipif(not (SHARED_DATA / "fibsem_medulla" / "volume.tif").is_file(), reason="FIB-SEM data absent")
def test_fibsem_cells_stitched_score_as_whole_volume():
    """A 64^3 crop of the FIB-SEM medulla neuron labels: membrane probability from their boundaries (blurred, with
    noise), cells stitched from 32^3 blocks against whole-volume 3D cells, both scored against the labels."""
    import tifffile

    crop = (slice(0, 64), slice(100, 164), slice(100, 164))
    with tifffile.TiffFile(SHARED_DATA / "fibsem_medulla" / "neuron-labels.tif") as tif:
        truth = np.stack([tif.pages[z].asarray()[crop[1:]] for z in range(crop[0].start, crop[0].stop)])
    prob = ndimage.gaussian_filter(boundaries_from_instances(truth, 3).astype(np.float32), 1.0)
    prob = np.clip(prob + np.random.default_rng(0).normal(0, 0.05, prob.shape).astype(np.float32), 0, 1)
    options = dict(SEGMENT, seeds="components", min_seed_size=16)  # distance seeds: whole 0.64, stitched 0.90
    whole = rand_info_scores(truth, segment_cells(prob, "3d", **options))[0]
    stitched = rand_info_scores(truth, stitched_cells(prob, (32, 32, 32), options=options))[0]
    assert abs(stitched - whole) < 0.01, (whole, stitched)


# ------------------------------------------------------------------------------------- runs on a LocalCluster
class Darkness(nn.Module):
    """A stand-in 2D network whose membrane logit is high where the normalized section is dark (EM membranes)."""

    spatial_dims = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 12.0 * (0.45 - x)


class Watched(nn.Module):
    """Wraps a network: each call appends a line to ``log``; while the file ``trigger`` exists, the first call to
    claim it (by removing it) kills its Dask worker process."""

    def __init__(self, network: nn.Module, log: str, trigger: str = "") -> None:
        super().__init__()
        self.network, self.log, self.trigger = network, log, trigger

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trigger:
            try:
                os.remove(self.trigger)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)  # a worker lost mid-block, as on a SIGKILL or a lost node
        with open(self.log, "a") as f:
            f.write(f"{x.shape[0]}\n")
        return self.network(x)


@pytest.fixture(scope="module")
def scheduler():
    """The address of a 2-worker LocalCluster (worker processes), shared by the tests of this module."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 6 x 96 x 80 EM volume as a zarr array chunked (2, 48, 40)."""
    import zarr

    image, _ = make_em_stack(SHAPE, cell_size=24, seed=3)
    path = tmp_path_factory.mktemp("dask") / "vol.zarr"
    zarr.open(str(path), mode="w", shape=SHAPE, chunks=CHUNKS, dtype=image.dtype)[:] = image
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scripts.fusionnet import FusionNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(FusionNet(features=FEATURES).state_dict(), path)
    return path


def segmenter(network: nn.Module, output_dir: Path, scheduler: str, **options) -> BlockwiseSegmenter:
    inferer = MembraneInferer(roi_size=[64, 64], precision="fp32")
    return BlockwiseSegmenter(network, inferer, str(output_dir), scheduler=scheduler, **options)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_inference_dask_config_equals_whole_volume_inference(volume: Path, checkpoint: Path, scheduler, tmp_path):
    """``['inference.json','inference_dask.json']`` on a 2-worker cluster: probability bit-identical to
    inference.json's whole-volume result, 2D cells and table identical."""
    common = dict(dataset_dir=str(volume), features=FEATURES, ckpt_path=str(checkpoint), roi_size=[64, 64],
                  plots=False, precision="fp32", **SEGMENT)  # fmt: skip
    run_workflow("inference.json", output_dir=str(tmp_path / "whole"), **common)
    wf = workflow(["inference.json", "inference_dask.json"], output_dir=str(tmp_path / "dask"), scheduler=scheduler,
                  **common)  # fmt: skip
    wf.run()
    prob, seg = open_zarr(tmp_path / "dask" / "vol_prob.zarr")[...], open_zarr(tmp_path / "dask" / "vol_seg.zarr")[...]
    assert np.array_equal(prob, open_zarr(tmp_path / "whole" / "vol_prob.zarr")[...])
    assert np.array_equal(seg, open_zarr(tmp_path / "whole" / "vol_seg.zarr")[...]) and seg.max() > 0
    assert rows(tmp_path / "dask" / "vol_cells.csv") == rows(tmp_path / "whole" / "vol_cells.csv")
    from distributed import Client

    with Client(scheduler) as client:  # two workers on one machine share its cores, not take all of them each
        assert host_threads(client) == {"127.0.0.1": 2}
        assert set(client.run(torch.get_num_threads).values()) == {max(1, (os.cpu_count() or 1) // 2)}


def test_killed_worker_block_is_rescheduled(volume: Path, scheduler, tmp_path: Path):
    """A worker dies in the middle of a block: Dask runs the block again elsewhere; the output is complete and
    equals that of an undisturbed run."""
    expected = segmenter(Darkness(), tmp_path / "calm", scheduler, instance_mode="none").run([str(volume)])[0]
    trigger = tmp_path / "kill-once"
    trigger.touch()
    network = Watched(Darkness(), str(tmp_path / "log"), str(trigger))
    result = segmenter(network, tmp_path / "out", scheduler, instance_mode="none").run([str(volume)])[0]
    assert not trigger.exists()  # a worker claimed it and died
    assert np.array_equal(open_zarr(result)[...], open_zarr(expected)[...])


def test_rerun_after_killed_job_skips_done_blocks(volume: Path, scheduler, tmp_path: Path):
    """A job killed after its first block: the rerun computes only the two other blocks and ends with the
    result of one uninterrupted run, cells stitched in 3D across (z, y, x) blocks included."""
    log = tmp_path / "log"
    options = dict(instance_mode="3d", block_size=[2, 48, 40], **SEGMENT)
    job = segmenter(Watched(Darkness(), str(log)), tmp_path / "out", scheduler, **options)
    prob_path = Path(job.run([str(volume)])[0])
    out = tmp_path / "out"
    prob, seg = open_zarr(prob_path)[...], open_zarr(out / "vol_seg.zarr")[...]
    table = rows(out / "vol_cells.csv")
    assert seg.max() > 3 and sorted(int(r["id"]) for r in table) == list(range(1, seg.max() + 1))
    whole = segment_cells(prob, "3d", **SEGMENT)
    assert rand_info_scores(whole, seg, ignore_gt_zero=False)[0] > 0.9
    calls = len(log.read_text().splitlines())

    # what a job killed after block 0 of the probability leaves: its marker and data, no result
    ledger = out / ".vol_prob.zarr.blocks"
    os.replace(prob_path, ledger / "data.zarr")
    for name in ("complete.json", "1.json", "2.json"):
        (ledger / name).unlink()
    shutil.rmtree(ledger / "data.zarr" / "0" / "2")  # sections 2.. were never written (OME-Zarr 0.4: "0/z/y/x")
    shutil.rmtree(ledger / "data.zarr" / "0" / "1")
    shutil.rmtree(out / ".vol_seg.zarr.blocks")
    shutil.rmtree(out / "vol_seg.zarr")
    log.unlink()

    job.run([str(volume)])
    assert len(log.read_text().splitlines()) * 3 == calls * 2  # blocks 1 and 2 only
    assert np.array_equal(open_zarr(prob_path)[...], prob)
    assert np.array_equal(open_zarr(out / "vol_seg.zarr")[...], seg)
    assert rows(out / "vol_cells.csv") == table


def test_dask_benchmark_volume_is_larger_than_a_worker_limit():
    """``python -m bundle benchmark_dask``'s defaults measure what it promises: a volume larger than one worker's
    memory limit (float32, so that minutes of compute suffice); the report says whether it is."""
    import inspect

    from bundle.benchmark_dask import format_dask, run_dask_benchmark, volume_against_limit

    defaults = {k: v.default for k, v in inspect.signature(run_dask_benchmark).parameters.items()}
    report = volume_against_limit(defaults["sections"], defaults["size"], defaults["dtype"], defaults["memory_limit"])
    assert report["volume_exceeds_limit"] and report["volume_gb"] > 1.2
    assert not volume_against_limit(8, 512, "uint8", "1GB")["volume_exceeds_limit"]
    tiny = run_dask_benchmark(sections=4, size=32, workers=(1,), memory_limit="2GB", block_sections=2)
    (run,) = tiny["runs"]
    assert run["seconds"] > 0 and run["efficiency"] == 1.0 and 0 < run["peak_rss_mb"][0] < 2000
    assert "NOT larger than the worker memory limit 2GB" in format_dask(tiny)
