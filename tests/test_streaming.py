# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""configs/inference_stream.json: section-by-section inference gives exactly the whole-volume outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import run_workflow
from sample_crop import write_sample_crop

from scripts.errors import BundleInputError, find_input_error
from scripts.streaming import TiffSections, write_tiff_sections

OPTIONS = {"roi_size": [128, 128], "plots": False}


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


def test_a_failed_stream_leaves_no_file(tmp_path: Path) -> None:
    def broken():
        yield np.zeros((4, 5), np.float32)
        raise BundleInputError("x.tif", "section 1 cannot be read", "re-export it")

    with pytest.raises(BundleInputError, match="section 1"):
        write_tiff_sections(str(tmp_path / "s_prob.tif"), broken(), (2, 4, 5), np.float32)
    assert list(tmp_path.iterdir()) == []


def test_streaming_rejects_what_needs_the_whole_volume(tmp_path: Path) -> None:
    data = write_sample_crop(tmp_path / "data")
    with pytest.raises(Exception) as info:
        run_workflow(["inference.json", "inference_stream.json"], dataset_dir=str(data), instance_mode="3d", **OPTIONS)
    assert "instance_mode" in str(find_input_error(info.value))
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(BundleInputError, match="TIFF"):
        TiffSections(tmp_path / "a.nii.gz")


def test_streaming_benchmark_reports_peak_memory_of_each_run() -> None:
    from bundle.benchmark_streaming import format_streaming, run_streaming_benchmark

    report = run_streaming_benchmark(sections=3, size=64, features=(4, 8, 8, 8, 8), roi=32)
    assert set(report["runs"]) == {"whole_1_section", "whole_3_sections", "streamed_3_sections"}
    assert all(r["peak_rss_mb"] > 0 and r["seconds"] > 0 for r in report["runs"].values())
    assert report["whole_over_streamed"] > 0 and "peak RSS" in format_streaming(report)
