# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""configs/inference_stream.json: section-by-section inference gives exactly the whole-volume outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import run_workflow
from sample_crop import write_sample_crop
from scripts.errors import BundleInputError, find_input_error
from scripts.fusionnet import FusionNet
from scripts.inferers import MembraneInferer
from scripts.io import read_stack, write_tiff
from scripts.streaming import (
    StreamingSegmenter,
    TiffSections,
    open_sections,
    sliding_window_planes,
    write_tiff_sections,
)
from scripts.synthetic import make_em_stack

OPTIONS = {"roi_size": [128, 128], "plots": False}
FEATURES_3D = [4, 8, 8, 8, 8]


def tiny_3d_network() -> FusionNet:
    """A seeded, untrained 3D FusionNet of width ``FEATURES_3D`` in eval mode."""
    torch.manual_seed(0)
    return FusionNet(spatial_dims=3, features=FEATURES_3D).eval()


def test_streaming_equals_whole_volume_inference(tmp_path: Path) -> None:
    data = write_sample_crop(tmp_path / "data", sections=3, height=160, width=176)
    run_workflow("inference.json", dataset_dir=str(data), output_dir=str(tmp_path / "whole"), **OPTIONS)
    run_workflow(
        ["inference.json", "inference_stream.json"],
        dataset_dir=str(data),
        output_dir=str(tmp_path / "stream"),
        **OPTIONS,
    )
    for suffix in ("_prob.tif", "_seg.tif"):
        whole, streamed = (tifffile.imread(tmp_path / d / f"em-crop{suffix}") for d in ("whole", "stream"))
        assert streamed.shape == whole.shape == (3, 160, 176) and streamed.dtype == whole.dtype
        np.testing.assert_array_equal(streamed, whole)
    whole_table, streamed_table = ((tmp_path / d / "em-crop_cells.csv").read_text() for d in ("whole", "stream"))
    assert streamed_table == whole_table and len(streamed_table.splitlines()) > 10
    assert not list((tmp_path / "stream").glob("*.part"))


def test_sections_are_written_as_one_series(tmp_path: Path) -> None:
    sections = [np.full((4, 5), z, np.float32) for z in range(7)]
    write_tiff_sections(str(tmp_path / "s.tif"), iter(sections), (7, 4, 5), np.float32)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s.tif"), np.stack(sections))
    assert [s[0, 0] for s in TiffSections(tmp_path / "s.tif")] == list(range(7))
    with TiffSections(tmp_path / "s.tif") as stack:
        np.testing.assert_array_equal(stack.read(2, 5), np.stack(sections[2:5]))
        np.testing.assert_array_equal(stack.read(6, 7), np.stack(sections[6:]))
        with pytest.raises(IndexError):
            stack.read(5, 8)


def test_a_failed_stream_leaves_no_file(tmp_path: Path) -> None:
    def broken():
        yield np.zeros((4, 5), np.float32)
        raise BundleInputError("x.tif", "section 1 cannot be read", "re-export it")

    with pytest.raises(BundleInputError, match="section 1"):
        write_tiff_sections(str(tmp_path / "s_prob.tif"), broken(), (2, 4, 5), np.float32)
    assert list(tmp_path.iterdir()) == []


def test_streaming_rejects_an_unknown_instance_mode_and_a_non_tiff_as_tiff(tmp_path: Path) -> None:
    data = write_sample_crop(tmp_path / "data")
    with pytest.raises(Exception) as info:
        run_workflow(["inference.json", "inference_stream.json"], dataset_dir=str(data), instance_mode="4d", **OPTIONS)
    assert "instance_mode" in str(find_input_error(info.value))
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(BundleInputError, match="TIFF"):
        TiffSections(tmp_path / "a.nii.gz")


@pytest.mark.parametrize("key,value", [("seeds", "random"), ("seed_threshold", 1.5), ("min_seed_size", -3)])
def test_streaming_rejects_bad_seed_settings_before_it_infers(tmp_path: Path, key: str, value: object) -> None:
    data = write_sample_crop(tmp_path / "data")
    configs = ["inference.json", "inference_stream.json"]
    with pytest.raises(Exception) as info:
        run_workflow(configs, dataset_dir=str(data), output_dir=str(tmp_path / "out"), **{key: value}, **OPTIONS)
    assert find_input_error(info.value).what == key
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_streaming_benchmark_reports_peak_memory_of_each_run() -> None:
    from bundle.benchmark_streaming import format_streaming, run_streaming_benchmark

    report = run_streaming_benchmark(sections=3, size=64, features=(4, 8, 8, 8, 8), roi=32)
    assert set(report["runs"]) == {"whole_1_section", "whole_3_sections", "streamed_3_sections"}
    assert all(r["peak_rss_mb"] > 0 and r["seconds"] > 0 for r in report["runs"].values())
    assert report["whole_over_streamed"] > 0 and "peak RSS" in format_streaming(report)
    report = run_streaming_benchmark(sections=8, size=32, features=(4, 8, 8, 8, 8), roi=32, isotropic=True)
    assert set(report["runs"]) == {"whole_2_sections", "whole_8_sections", "streamed_8_sections"}
    assert "planes xy, xz, yz" in format_streaming(report)


@pytest.mark.parametrize("instance_mode, sw_batch_size", [("none", 3), ("2d", 2)])
def test_3d_streaming_equals_whole_volume_inference(tmp_path: Path, instance_mode: str, sw_batch_size: int) -> None:
    """A 3D network streamed slab by slab gives bit-identical outputs: same windows, batches, weights, sums.

    40 x 48 x 56 with 16 x 32 x 32 windows at overlap 0.25 is 3 x 2 x 2 windows; 3 windows a batch makes batches
    that span two z-steps.
    """
    image, _ = make_em_stack((40, 48, 56), cell_size=16, seed=3)
    write_tiff(tmp_path / "data" / "cube.tif", image)
    torch.save(tiny_3d_network().state_dict(), tmp_path / "model.pt")
    configs = ["inference.json", "inference_3d.json"]
    options = dict(
        dataset_dir=str(tmp_path / "data"), ckpt_path=str(tmp_path / "model.pt"), features=FEATURES_3D,
        roi_size=[16, 32, 32], overlap=0.25, sw_batch_size=sw_batch_size, instance_mode=instance_mode, plots=False,
    )  # fmt: skip
    run_workflow(configs, output_dir=str(tmp_path / "whole"), **options)
    run_workflow([*configs, "inference_stream.json"], output_dir=str(tmp_path / "stream"), **options)
    suffixes = ("_prob.tif", "_seg.tif", "_cells.csv") if instance_mode == "2d" else ("_prob.tif",)
    assert sorted(p.name for p in (tmp_path / "stream").iterdir()) == sorted(f"cube{s}" for s in suffixes)
    for suffix in suffixes[:2]:
        whole, streamed = (tifffile.imread(tmp_path / d / f"cube{suffix}") for d in ("whole", "stream"))
        assert streamed.shape == whole.shape == (40, 48, 56) and streamed.dtype == whole.dtype
        np.testing.assert_array_equal(streamed, whole)
    if instance_mode == "2d":
        whole_table, streamed_table = ((tmp_path / d / "cube_cells.csv").read_text() for d in ("whole", "stream"))
        assert streamed_table == whole_table
    if instance_mode == "none":  # 3D neurons of a volume of one slab (scripts.slab_neurons): the whole volume's
        neurons = {**options, "instance_mode": "3d", "agglomeration": 0}
        run_workflow(configs, output_dir=str(tmp_path / "whole3d"), **neurons)
        run_workflow([*configs, "inference_stream.json"], output_dir=str(tmp_path / "stream3d"), **neurons)
        whole, streamed = (tifffile.imread(tmp_path / d / "cube_seg.tif") for d in ("whole3d", "stream3d"))
        np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize(
    "shape, roi, sw_batch_size, options",
    [
        ((40, 48, 56), (16, 32, 32), 5, {"mode": "constant", "overlap": 0.5}),  # batches over several z-steps
        ((28, 32, 48), (16, 32, 32), 1, {}),  # MONAI passes single windows as views
        ((12, 20, 56), (16, 32, 32), 3, {}),  # shallower and narrower than a window: reflect padding
        ((5, 40, 40), (32, 32, 32), 2, {}),  # window shrunk to 16 deep, padded by replication
        ((20, 16, 32), (16, 16, 16), 2, {"tta": True}),
    ],
)
def test_slabs_reproduce_sliding_window_inference(
    shape: tuple[int, int, int], roi: tuple[int, int, int], sw_batch_size: int, options: dict
) -> None:
    """``sliding_window_planes`` with ``MembraneInferer``'s settings equals ``MembraneInferer`` on the whole volume
    exactly, and reads every section once (or the whole of a volume shallower than a window)."""
    inferer = MembraneInferer(roi, sw_batch_size=sw_batch_size, spatial_dims=3, **options)
    network = tiny_3d_network()
    volume = torch.from_numpy(np.random.default_rng(1).random(shape, dtype=np.float32))[None, None]
    reads: list[tuple[int, int]] = []

    def read(start: int, stop: int) -> torch.Tensor:
        reads.append((start, stop))
        return volume[:, :, start:stop]

    with torch.inference_mode():
        whole = inferer(volume, network)[0]
        window, kwargs = inferer.window_settings(shape)
        planes = sliding_window_planes(
            read, shape, window, predictor=inferer.predictor(network, volume.device), **kwargs
        )
        streamed = torch.stack(list(planes), dim=1)
    assert streamed.shape == whole.shape == (1, *shape)
    assert torch.equal(streamed, whole)
    assert sum(stop - start for start, stop in reads) == shape[0]


def test_3d_streaming_holds_about_one_window_depth(tmp_path: Path) -> None:
    """Each z-plane is written once no later window touches it: with 16-deep windows every 12 sections, plane z is
    out before section z + 16 is read, and every section is read once."""
    write_tiff(tmp_path / "v.tif", np.random.default_rng(2).integers(0, 255, (64, 32, 32), dtype=np.uint8))
    inferer = MembraneInferer([16, 32, 32], sw_batch_size=1, spatial_dims=3)
    streamer = StreamingSegmenter(tiny_3d_network(), inferer, str(tmp_path), instance_mode="none")
    stack = TiffSections(tmp_path / "v.tif")
    reads: list[tuple[int, int]] = []
    read = stack.read

    def recorded_read(start: int, stop: int) -> np.ndarray:
        reads.append((start, stop))
        return read(start, stop)

    stack.read = recorded_read  # type: ignore[method-assign]
    for z, plane in enumerate(streamer.probabilities(stack)):
        assert plane.shape == (32, 32) and plane.dtype == np.float32
        assert max(stop for _, stop in reads) <= z + 16
    assert z == 63 and reads == [(0, 16), (16, 28), (28, 40), (40, 52), (52, 64)]
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(BundleInputError, match="single 2D section"):
        streamer.segment(str(tmp_path / "one.tif"))


def _h5_copy(tiff: Path, target: Path, **extra: np.ndarray) -> Path:
    """``tiff``'s stack as dataset ``volume`` of ``target`` (plus ``extra`` datasets)."""
    import h5py

    target.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(target, "w") as f:
        f.create_dataset("volume", data=tifffile.imread(tiff), chunks=True)
        for name, data in extra.items():
            f.create_dataset(name, data=data)
    return target


def test_hdf5_in_and_out_equals_tiff_whole_volume(tmp_path: Path) -> None:
    """An HDF5 volume streams in and out (X_prob.h5:/prob, X_seg.h5:/seg) with the whole-volume TIFF results."""
    import h5py

    data = write_sample_crop(tmp_path / "data", sections=3, height=160, width=176)
    labels = np.zeros((3, 160, 176), np.uint32)  # a second 3D dataset: the one named "volume" is the image
    _h5_copy(data / "em-crop.tif", tmp_path / "h5" / "em-crop.h5", labels=labels)
    run_workflow("inference.json", dataset_dir=str(data), output_dir=str(tmp_path / "whole"), **OPTIONS)
    run_workflow(
        ["inference.json", "inference_stream.json"], dataset_dir=str(tmp_path / "h5"),
        output_dir=str(tmp_path / "stream"), output_format="h5", **OPTIONS,
    )  # fmt: skip
    for kind in ("prob", "seg"):
        with h5py.File(tmp_path / "stream" / f"em-crop_{kind}.h5", "r") as f:
            streamed = f[kind][()]
            assert f[kind].chunks == (1, 160, 176)
        np.testing.assert_array_equal(streamed, tifffile.imread(tmp_path / "whole" / f"em-crop_{kind}.tif"))
    tables = [(tmp_path / d / "em-crop_cells.csv").read_text() for d in ("stream", "whole")]
    assert tables[0] == tables[1]


def test_hdf5_input_to_whole_volume_inference(tmp_path: Path) -> None:
    data = write_sample_crop(tmp_path / "data")
    _h5_copy(data / "em-crop.tif", tmp_path / "h5" / "em-crop.h5")
    run_workflow("inference.json", dataset_dir=str(data), output_dir=str(tmp_path / "tif_out"), **OPTIONS)
    run_workflow("inference.json", dataset_dir=str(tmp_path / "h5"), output_dir=str(tmp_path / "h5_out"), **OPTIONS)
    from_h5, from_tif = (tifffile.imread(tmp_path / d / "em-crop_prob.tif") for d in ("h5_out", "tif_out"))
    np.testing.assert_array_equal(from_h5, from_tif)


def test_hdf5_with_several_image_datasets_names_them(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "two.h5", "w") as f:
        f.create_dataset("a", data=np.zeros((2, 8, 8), np.uint8))
        f.create_dataset("b", data=np.zeros((2, 8, 8), np.uint8))
    for read in (open_sections, read_stack):
        with pytest.raises(BundleInputError, match="several 2D/3D image datasets") as info:
            read(tmp_path / "two.h5")
        assert "(a, b)" in info.value.problem and "volume" in info.value.fix
