# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Three-plane segmentation of near-isotropic volumes (scripts.planes) and the isotropic zoom."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import SHARED_DATA, run_workflow
from monai.data import MetaTensor
from scripts import streaming
from scripts.errors import BundleInputError, find_input_error
from scripts.fusionnet import FusionNet
from scripts.inferers import MembraneInferer
from scripts.io import PixelSize, write_tiff
from scripts.planes import (
    ANISOTROPY_MAX_LAG,
    IMAGE_ISOTROPY_RATIO,
    as_plane,
    choose_planes,
    from_plane,
    image_anisotropy,
    is_isotropic,
    plane_average,
    volume_zoom,
)
from scripts.scale import ZoomPolicy, choose_zoom, model_isotropic_pixel_size, write_model_pixel_size
from scripts.synthetic import make_em_stack
from scripts.transforms import ChooseZoomd

WIDTH = [4, 8, 8, 8, 8]


class RowWeighted(torch.nn.Module):
    """A 'network' that sees its sections' orientation: the probability grows down each section's rows, so each
    plane's map differs and their mean is none of them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.linspace(-2, 2, x.shape[-2]).reshape(1, 1, -1, 1)
        return x * 0 + rows + x


def test_choose_planes_follows_isotropy() -> None:
    assert choose_planes("auto", (10.0, 10.0, 10.0), 50).three
    assert choose_planes("auto", (12.0, 8.0, 8.0), 50).three  # SBEM-like, 1.5x
    assert choose_planes("auto", (50.0, 4.0, 4.0), 20).planes == ("xy",)
    assert "unknown" in choose_planes("auto", (None, 4.0, 4.0), 20).reason
    assert choose_planes("auto", None, 20).planes == ("xy",)
    assert choose_planes("xy", (10.0, 10.0, 10.0), 50).planes == ("xy",)
    assert choose_planes("xyz", None, 50).three  # forced: taken to be isotropic
    assert choose_planes("auto", (10.0, 10.0, 10.0), 1).planes == ("xy",)  # one section
    assert choose_planes("auto", (10.0, 10.0, 10.0), 50, spatial_dims=3).planes == ("xy",)
    assert is_isotropic((10.0, 10.0, 10.0)) and not is_isotropic((50.0, 4.0, 4.0)) and not is_isotropic(None)


def test_image_anisotropy_reads_the_section_spacing() -> None:
    """A FIB-SEM-like volume reads about 1, an ssTEM-like stack its 4-pixel section spacing, whatever the noise;
    sections that share nothing (white noise) give the largest value: never three planes."""
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        fib, _ = make_em_stack((16, 96, 96), cell_size=24, seed=seed, isotropic=True)
        sstem, _ = make_em_stack((16, 96, 96), cell_size=24, seed=seed)
        for noise in (0.0, 40.0):
            assert image_anisotropy(fib + rng.normal(0, noise, fib.shape)) < IMAGE_ISOTROPY_RATIO
            assert 3.0 < image_anisotropy(sstem + rng.normal(0, noise, sstem.shape)) < 5.0
    assert image_anisotropy(rng.random((16, 96, 96))) == ANISOTROPY_MAX_LAG


def test_choose_planes_by_the_image_where_z_is_unknown() -> None:
    fib, _ = make_em_stack((12, 48, 48), cell_size=16, seed=3, isotropic=True)
    sstem, _ = make_em_stack((12, 48, 48), cell_size=16, seed=3)
    for pixel_size in (None, (None, 10.0, 10.0)):
        choice = choose_planes("auto", pixel_size, 12, read=lambda: fib)
        assert choice.three and "z spacing unknown; the image looks near-isotropic" in choice.reason
        choice = choose_planes("auto", pixel_size, 12, read=lambda: sstem)
        assert choice.planes == ("xy",) and "looks anisotropic" in choice.reason and "--planes xyz" in choice.reason

    def unread() -> np.ndarray:
        raise AssertionError("the image is only read where the pixel size does not decide")

    assert choose_planes("auto", None, 7, read=unread).planes == ("xy",)  # too few sections to judge
    assert choose_planes("auto", (50.0, 4.0, 4.0), 12, read=unread).planes == ("xy",)
    assert choose_planes("xy", None, 12, read=unread).planes == ("xy",)


@pytest.mark.skipif(not (SHARED_DATA / "fibsem_medulla").is_dir(), reason="needs ../shared/data")
def test_image_anisotropy_tells_fibsem_from_sstem() -> None:
    """Real EM: every block of the 10 nm FIB-SEM cube (and its xz sections) is near-isotropic; the cube with every
    second section (20 nm), ISBI 2012 ssTEM (50 x 4 x 4 nm) and ISBI binned 4x in x/y (z 3.1x x/y) are not."""
    from scripts.io import read_stack

    fib = read_stack(SHARED_DATA / "fibsem_medulla" / "volume.tif").array
    isbi = read_stack(SHARED_DATA / "isbi2012" / "train-volume.tif").array
    for z in range(0, 250, 50):
        assert image_anisotropy(fib[z : z + 16]) < IMAGE_ISOTROPY_RATIO
    assert image_anisotropy(np.ascontiguousarray(fib[:, 100:116].transpose(1, 0, 2))) < IMAGE_ISOTROPY_RATIO
    assert image_anisotropy(fib[100:132:2]) > 2.0
    assert image_anisotropy(isbi[:16]) > 8.0 and image_anisotropy(isbi[:16, ::4, ::4]) > 2.0


def test_three_planes_refused_for_anisotropic_volume() -> None:
    with pytest.raises(BundleInputError, match="planes.*12.5x"):
        choose_planes("xyz", (50.0, 4.0, 4.0), 20)
    with pytest.raises(BundleInputError, match="planes"):
        choose_planes("xzy", (10.0, 10.0, 10.0), 20)


def test_planes_round_trip_and_average() -> None:
    x = torch.arange(3 * 4 * 5, dtype=torch.float32).reshape(1, 1, 3, 4, 5) / 100
    for plane in ("xy", "xz", "yz"):
        torch.testing.assert_close(from_plane(as_plane(x, plane), plane), x)
    assert as_plane(x, "xz").shape == (1, 1, 4, 3, 5) and as_plane(x, "yz").shape == (1, 1, 5, 3, 4)
    torch.testing.assert_close(plane_average(x, ("xy", "xz", "yz"), lambda sections, plane: sections), x)


def test_volume_zoom_keeps_the_model_pixel_square() -> None:
    assert volume_zoom((1.0, 1.0), (10.0, 10.0, 10.0)) == (1.0, 1.0, 1.0)
    assert volume_zoom((0.5, 0.5), (12.0, 8.0, 8.0)) == pytest.approx((0.75, 0.5, 0.5))
    assert volume_zoom((2.0, 2.0), None) == (2.0, 2.0, 2.0)


def test_inferer_averages_the_three_planes() -> None:
    torch.manual_seed(0)
    volume = torch.rand(1, 1, 16, 32, 48)
    inferer = MembraneInferer(roi_size=[64, 64], overlap=0.0, mode="constant")
    network = RowWeighted()
    xy = inferer(volume, network)
    three = inferer(MetaTensor(volume, meta={"volume_zoom": torch.tensor([1.0, 1.0, 1.0])}), network)
    expected = sum(from_plane(inferer(as_plane(volume, p).contiguous(), network), p) for p in ("xy", "xz", "yz")) / 3
    torch.testing.assert_close(three, expected)
    assert three.shape == volume.shape and not torch.allclose(three, xy, atol=1e-3)


def test_inferer_zooms_each_plane_by_its_own_axes() -> None:
    volume = torch.rand(1, 1, 16, 32, 32)
    inferer = MembraneInferer(roi_size=[64, 64], overlap=0.0, mode="constant")
    seen: list[tuple[int, int]] = []

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[-2:]))
            return x

    zoomed = MetaTensor(volume, meta={"zoom": torch.tensor([2.0, 2.0]), "volume_zoom": torch.tensor([1.0, 2.0, 2.0])})
    assert inferer(zoomed, Recorder()).shape == volume.shape
    assert {(64, 64), (16, 64)} <= set(seen)  # xy at 2 x 2; xz and yz keep z at 1 (padded to 16 there)


def test_isotropic_zoom_follows_the_pixel_size_without_estimate() -> None:
    def evidence() -> list:
        raise AssertionError("the image's evidence must not decide an isotropic volume's zoom")

    choice = choose_zoom("auto", 2, (50.0, 4.0, 4.0), (8.0, 8.0, 8.0), "file", evidence=evidence,
                         isotropic_nm=(10.0, 10.0, 10.0))  # fmt: skip
    assert choice.zoom == pytest.approx((0.8, 0.8)) and "isotropic" in choice.reason
    assert choose_zoom("auto", 2, (50.0, 4.0, 4.0), (50.0, 8.0, 8.0), "file", isotropic_nm=(10.0, 10.0, 10.0)).zoom == (
        2.0,
        2.0,
    )  # ssTEM keeps the ssTEM scale


def test_model_sidecar_carries_the_isotropic_scale(tmp_path) -> None:
    ckpt = tmp_path / "model.pt"
    write_model_pixel_size(str(ckpt), (50.0, 4.0, 4.0))
    assert model_isotropic_pixel_size(str(ckpt)) is None
    write_model_pixel_size(str(ckpt), (50.0, 4.0, 4.0), (10.0, 10.0, 10.0))
    assert model_isotropic_pixel_size(str(ckpt)) == (10.0, 10.0, 10.0)
    (tmp_path / "model.json").write_text('{"pixel_size_nm": [50, 4, 4], "isotropic_pixel_size_nm": [10, -1, 10]}')
    with pytest.raises(BundleInputError, match="model.json"):
        model_isotropic_pixel_size(str(ckpt))


def test_choose_zoomd_marks_three_planes(caplog: pytest.LogCaptureFixture) -> None:
    policy = ZoomPolicy("auto", "file", (50.0, 4.0, 4.0), 2, isotropic_pixel_size=(10.0, 10.0, 10.0))
    image = np.random.default_rng(0).random((1, 8, 32, 32)).astype(np.float32)
    entry = {"nm": [10.0, 10.0, 10.0], "source": "test"}
    with caplog.at_level(logging.INFO):
        d = ChooseZoomd("image", policy, planes="auto")({"image": image, "image_pixel_size": entry})
    assert d["image_planes"] == 3 and d["image"].meta["volume_zoom"].tolist() == [1.0, 1.0, 1.0]
    assert "planes xy, xz, yz (near-isotropic" in caplog.text
    sstem = {"nm": [50.0, 4.0, 4.0], "source": "test"}
    d = ChooseZoomd("image", policy, planes="auto")({"image": image, "image_pixel_size": sstem})
    assert d["image_planes"] == 1 and "volume_zoom" not in d["image"].meta


@pytest.fixture(scope="module")
def isotropic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny FusionNet whose sidecar gives it a 10 nm scale for near-isotropic volumes."""
    path = tmp_path_factory.mktemp("iso_model") / "model.pt"
    torch.manual_seed(0)
    torch.save(FusionNet(features=WIDTH).state_dict(), path)
    write_model_pixel_size(str(path), (50.0, 4.0, 4.0), (10.0, 10.0, 10.0))
    return path


def _isotropic_volume(folder: Path, nm: tuple[float, float, float] = (10.0, 10.0, 10.0)) -> Path:
    image, _ = make_em_stack((12, 48, 48), cell_size=16, seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    write_tiff(folder / "fib.tif", image, PixelSize(nm, "test"))
    return folder


def test_isotropic_volume_gives_three_planes_and_3d_neurons(
    tmp_path: Path, isotropic_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"ckpt_path": str(isotropic_model), "features": WIDTH, "plots": False, "tta": False}
    with caplog.at_level(logging.INFO):
        run_workflow("inference.json", dataset_dir=str(_isotropic_volume(tmp_path / "in")),
                     output_dir=str(tmp_path / "out"), **options)  # fmt: skip
    assert "planes xy, xz, yz" in caplog.text and "cells in 3D" in caplog.text
    prob, seg = tifffile.imread(tmp_path / "out" / "fib_prob.tif"), tifffile.imread(tmp_path / "out" / "fib_seg.tif")
    assert prob.shape == seg.shape == (12, 48, 48) and prob.dtype == np.float32 and seg.dtype == np.uint32
    header = (tmp_path / "out" / "fib_cells.csv").read_text().splitlines()[0]
    assert "volume_phys" in header and "bbox_z1" in header
    run_workflow("inference.json", dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "xy"), planes="xy",
                 instance_mode="none", **options)  # fmt: skip
    assert not np.allclose(tifffile.imread(tmp_path / "xy" / "fib_prob.tif"), prob, atol=1e-4)


def test_untagged_isotropic_volume_gets_three_planes_by_its_image(
    tmp_path: Path, isotropic_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIB-SEM-like volume saved without a pixel size: whole-volume, streamed and Dask blockwise inference each
    read the same sections, choose three planes and 3D neurons, and give the same map."""
    from scripts.io import create_zarr, finalize_zarr, open_zarr

    image, _ = make_em_stack((12, 48, 48), cell_size=16, seed=3, isotropic=True)
    (tmp_path / "in").mkdir()
    write_tiff(tmp_path / "in" / "fib.tif", image)
    create_zarr(tmp_path / "zarr" / "fib.zarr", image.shape, image.dtype, chunks=(4, 16, 16))[...] = image
    finalize_zarr(tmp_path / "zarr" / "fib.zarr")
    options = {"ckpt_path": str(isotropic_model), "features": WIDTH, "plots": False, "tta": False}
    runs = {"whole": ("inference.json", "in"), "stream": (["inference.json", "inference_stream.json"], "in"),
            "dask": (["inference.json", "inference_dask.json"], "zarr")}  # fmt: skip
    maps = {}
    for name, (configs, folder) in runs.items():
        caplog.clear()
        extra = {"scheduler": "local:2", "block_size": [4, 16, 16]} if name == "dask" else {}
        with caplog.at_level(logging.INFO):
            run_workflow(configs, dataset_dir=str(tmp_path / folder), output_dir=str(tmp_path / name), **options,
                         **extra)  # fmt: skip
        assert "planes xy, xz, yz (z spacing unknown; the image looks near-isotropic" in caplog.text, name
        assert "cells in 3D" in caplog.text, name
        prob = tmp_path / name / ("fib_prob.zarr" if name == "dask" else "fib_prob.tif")
        maps[name] = open_zarr(prob)[...] if name == "dask" else tifffile.imread(prob)
    np.testing.assert_allclose(maps["stream"], maps["whole"], atol=1e-5)
    np.testing.assert_allclose(maps["dask"], maps["whole"], atol=1e-5)


def test_sstem_stack_stays_xy_and_2d(tmp_path: Path, isotropic_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _isotropic_volume(tmp_path / "in", (50.0, 4.0, 4.0))
    with caplog.at_level(logging.INFO):
        run_workflow("inference.json", dataset_dir=str(folder), output_dir=str(tmp_path / "out"),
                     ckpt_path=str(isotropic_model), features=WIDTH, plots=False, tta=False, zoom="pixel_size")  # fmt: skip
    assert "planes xy (anisotropic" in caplog.text and "cells in 3D" not in caplog.text
    assert "area_px" in (tmp_path / "out" / "fib_cells.csv").read_text().splitlines()[0]


def test_streamed_three_planes_equal_the_whole_volumes(
    tmp_path: Path, isotropic_model: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inference_stream.json reads the xz and yz sections back from its scratch files 5 rows at a time here (a
    large volume's few rows): the map is the whole volume's, the cells those of its sections, no scratch stays."""
    monkeypatch.setattr(streaming, "SCRATCH_CHUNK_PIXELS", 12 * 48 * 5)
    folder = _isotropic_volume(tmp_path / "in")
    options = {"ckpt_path": str(isotropic_model), "features": WIDTH, "plots": False, "instance_mode": "2d"}
    run_workflow("inference.json", dataset_dir=str(folder), output_dir=str(tmp_path / "whole"), **options)
    with caplog.at_level(logging.INFO):
        run_workflow(["inference.json", "inference_stream.json"], dataset_dir=str(folder),
                     output_dir=str(tmp_path / "stream"), **options)  # fmt: skip
    assert "planes xy, xz, yz (near-isotropic" in caplog.text
    whole, streamed = (tifffile.imread(tmp_path / d / "fib_prob.tif") for d in ("whole", "stream"))
    assert streamed.shape == whole.shape == (12, 48, 48) and streamed.dtype == np.float32
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    np.testing.assert_array_equal(*(tifffile.imread(tmp_path / d / "fib_seg.tif") for d in ("whole", "stream")))
    assert sorted(p.name for p in (tmp_path / "stream").iterdir()) == ["fib_cells.csv", "fib_prob.tif", "fib_seg.tif"]


def test_neuron_slabs_hold_the_budget_and_outweigh_their_halo() -> None:
    from scripts.slab_neurons import HALO, slab_bounds

    assert slab_bounds(250, 250 * 250) == [slice(0, 250)]  # the 250^3 FIB-SEM cube: one slab, segmented whole
    slabs = slab_bounds(100, 4096 * 4096)  # large sections: slabs of 2 x HALO sections, never of one
    assert slabs[0] == slice(0, 2 * HALO) and slabs[-1].stop == 100 and len(slabs) == -(-100 // (2 * HALO))


def test_streamed_3d_neurons_are_the_whole_volumes(
    tmp_path: Path, isotropic_model: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inference_stream.json makes 3D neurons of a near-isotropic volume by default, here in three slabs of 4
    sections (2 of halo) stitched across their faces: the neurons of the whole volume, a 3D table, no scratch left."""
    from scripts import slab_neurons
    from scripts.isbi_metrics import rand_info_scores

    monkeypatch.setattr(slab_neurons, "HALO", 2)
    monkeypatch.setattr(slab_neurons, "SLAB_VOXELS", 48 * 48 * 8)  # 4 sections a slab, 2 a side of halo
    folder = _isotropic_volume(tmp_path / "in")
    options = {"ckpt_path": str(isotropic_model), "features": WIDTH, "plots": False, "tta": False}
    with caplog.at_level(logging.INFO):
        run_workflow(["inference.json", "inference_stream.json"], dataset_dir=str(folder),
                     output_dir=str(tmp_path / "auto"), **options)  # fmt: skip
    assert "fib.tif: cells in 3D" in caplog.text
    assert "volume_phys" in (tmp_path / "auto" / "fib_cells.csv").read_text().splitlines()[0]
    assert sorted(p.name for p in (tmp_path / "auto").iterdir()) == ["fib_cells.csv", "fib_prob.tif", "fib_seg.tif"]

    # the untrained network's map: seeds in its lowest 40%, no merging, so that there are neurons to compare
    threshold = float(np.quantile(tifffile.imread(tmp_path / "auto" / "fib_prob.tif"), 0.4))
    neurons = {"instance_mode": "3d", "seed_threshold": threshold, "min_seed_size": 4, "agglomeration": 0, **options}
    run_workflow("inference.json", dataset_dir=str(folder), output_dir=str(tmp_path / "whole"), **neurons)
    run_workflow(["inference.json", "inference_stream.json"], dataset_dir=str(folder),
                 output_dir=str(tmp_path / "stream"), **neurons)  # fmt: skip
    whole, streamed = (tifffile.imread(tmp_path / d / "fib_seg.tif") for d in ("whole", "stream"))
    assert whole.max() > 3 and streamed.dtype == np.uint32 and streamed.min() > 0  # dense neurons
    assert rand_info_scores(whole, streamed, ignore_gt_zero=False)[0] > 0.9


def test_streamed_three_planes_stop_on_a_full_disk(
    tmp_path: Path, isotropic_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(Exception) as info:
        run_workflow(["inference.json", "inference_stream.json"], dataset_dir=str(_isotropic_volume(tmp_path / "in")),
                     output_dir=str(tmp_path / "out"), ckpt_path=str(isotropic_model), features=WIDTH)  # fmt: skip
    error = find_input_error(info.value)
    assert error is not None and "scratch" in error.problem and "--planes xy" in error.fix
    assert list((tmp_path / "out").iterdir()) == []


def _isotropic_zarr(folder: Path) -> Path:
    """The isotropic test volume as an OME-Zarr of 10 nm voxels in chunks of (4, 16, 16): 3 x 3 x 3 chunks."""
    from scripts.io import create_zarr, finalize_zarr

    image, _ = make_em_stack((12, 48, 48), cell_size=16, seed=3)
    path = folder / "fib.zarr"
    folder.mkdir(parents=True, exist_ok=True)
    create_zarr(path, image.shape, image.dtype, chunks=(4, 16, 16), pixel_size=PixelSize((10.0, 10.0, 10.0), "test"))[
        ...
    ] = image
    finalize_zarr(path)
    return folder


def test_dask_three_planes_equal_the_whole_volumes(
    tmp_path: Path, isotropic_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """inference_dask.json on a near-isotropic OME-Zarr: three passes of blocks (3 of z, 3 bands of y, 3 of x) give
    the whole volume's map and, by default, 3D neurons; a rerun with other seeds reuses the map and its neurons,
    stitched across 27 blocks, are the whole volume's; the planes' work zarrs are removed (the ledger, which
    lets a rerun skip finished work, stays hidden)."""
    from scripts.instances import segment_cells
    from scripts.io import open_zarr
    from scripts.isbi_metrics import rand_info_scores

    folder = _isotropic_zarr(tmp_path / "in")
    options = {"ckpt_path": str(isotropic_model), "features": WIDTH, "plots": False, "tta": False}
    dask_options = {"dataset_dir": str(folder), "scheduler": "local:2", "output_dir": str(tmp_path / "dask"),
                    "block_size": [4, 16, 16], **options}  # fmt: skip
    run_workflow("inference.json", dataset_dir=str(folder), output_dir=str(tmp_path / "whole"), **options)
    with caplog.at_level(logging.INFO):
        run_workflow(["inference.json", "inference_dask.json"], **dask_options)
    assert "planes xy, xz, yz (near-isotropic" in caplog.text and "fib: cells in 3D" in caplog.text
    assert "fib: xz sections: 3 of 3 blocks" in caplog.text and "fib: yz sections: 3 of 3 blocks" in caplog.text
    whole, dask = (open_zarr(tmp_path / d / "fib_prob.zarr")[...] for d in ("whole", "dask"))
    assert dask.shape == whole.shape == (12, 48, 48) and dask.dtype == np.float32
    np.testing.assert_allclose(dask, whole, atol=1e-5)
    visible = sorted(p.name for p in (tmp_path / "dask").iterdir() if not p.name.startswith("."))
    assert visible == ["fib_cells.csv", "fib_prob.zarr", "fib_seg.zarr"]
    assert not [p for p in (tmp_path / "dask" / ".fib_prob.zarr.blocks").iterdir() if p.is_dir()]  # planes' zarrs

    threshold = float(np.quantile(dask, 0.4))  # the untrained network's map: seeds in its lowest 40%, no merging
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_workflow(["inference.json", "inference_dask.json"], instance_mode="3d", seed_threshold=threshold,
                     min_seed_size=4, agglomeration=0, **dask_options)  # fmt: skip
    assert "blocks to do" not in caplog.text.split("cells in 3D")[0]  # the map was not computed again
    seg = open_zarr(tmp_path / "dask" / "fib_seg.zarr")[...]
    expected = segment_cells(whole, "3d", seed_threshold=threshold, min_seed_size=4, seeds="components")
    assert expected.max() > 3 and rand_info_scores(expected, seg, ignore_gt_zero=False)[0] > 0.9
