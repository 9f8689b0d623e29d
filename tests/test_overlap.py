# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Post-processing overlapped with the network (scripts.background, SaveEMResultsd workers, MembraneInferer's
section sink): the same files, byte for byte, as the serial path; errors named and nothing half-written."""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_workflow
from monai.inferers import SliceInferer
from scripts.fusionnet import FusionNet
from scripts.inferers import MembraneInferer
from scripts.io import write_tiff
from scripts.synthetic import make_em_stack


def test_inference_by_sections_is_one_call_on_the_stack_bit_for_bit() -> None:
    """Chunks of sw_batch_size sections (several windows per section, a short last chunk) give exactly MONAI's
    SliceInferer on the whole stack, and the sink gets each chunk, in order, as it is done."""
    torch.manual_seed(0)
    network = FusionNet(features=TINY).eval()
    x = torch.rand(1, 1, 5, 48, 80)
    seen = []
    inferer = MembraneInferer(roi_size=(32, 32), sw_batch_size=2, section_sink=lambda s, p: seen.append((s, p)))
    with torch.inference_mode():
        chunked = inferer(x, network)
        roi, kwargs = inferer.window_settings(x.shape[-2:])
        whole = SliceInferer(spatial_dim=0, roi_size=roi, **kwargs)(x, inferer.predictor(network, x.device))
    assert torch.equal(chunked, whole)
    assert [s for s, _ in seen] == [0, 2, 4] and torch.equal(torch.cat([p for _, p in seen], dim=2), whole)


#: a "network" that calls dark pixels membrane: logits 10 - 20 x on the normalized image, so the cells are those of
#: the synthetic EM image (a random FusionNet gives one cell per section)
DARK_IS_MEMBRANE = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 1}


@pytest.fixture()
def dark_is_membrane(tmp_path: Path) -> Path:
    path = tmp_path / "dark.pt"
    torch.save({"weight": torch.full((1, 1, 1, 1), -20.0), "bias": torch.full((1,), 10.0)}, path)
    return path


def test_overlapped_job_writes_the_serial_files_byte_for_byte(
    dark_is_membrane: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inference.json with postprocess_workers 0 (serial) and 1, 2 (background): every output file is identical;
    in the background runs the cells of each section start from the inferer and the files are written off the
    evaluator's thread."""
    import scripts.writers

    image, _ = make_em_stack((5, 80, 112), seed=3)
    write_tiff(tmp_path / "in" / "stack.tif", image)
    write_tiff(tmp_path / "in" / "single.tif", image[0])
    streamed, writers = [], []
    take_sections, write_table = scripts.writers.SaveEMResultsd.take_sections, scripts.writers.write_cell_table

    def spy_take_sections(self, start, probability):  # type: ignore[no-untyped-def]
        take_sections(self, start, probability)
        streamed.append(len(self._sections))

    def spy_write_table(*args, **kwargs):  # type: ignore[no-untyped-def]
        writers.append(threading.current_thread().name)
        write_table(*args, **kwargs)

    monkeypatch.setattr(scripts.writers.SaveEMResultsd, "take_sections", spy_take_sections)
    monkeypatch.setattr(scripts.writers, "write_cell_table", spy_write_table)
    outputs = {}
    for workers in (0, 1, 2):
        streamed.clear()
        writers.clear()
        run_workflow(
            "inference.json", dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / f"out{workers}"),
            ckpt_path=str(dark_is_membrane), network_def=DARK_IS_MEMBRANE, roi_size=[64, 64], sw_batch_size=2,
            postprocess_workers=workers,
        )  # fmt: skip
        outputs[workers] = {p.name: p.read_bytes() for p in sorted((tmp_path / f"out{workers}").iterdir())}
        on_threads = [name.startswith("postprocess") for name in writers]
        assert on_threads == [workers > 0] * 2
        # the single section, then the stack's 5 sections in chunks of 2
        assert streamed == ([] if workers == 0 else [1, 2, 4, 5])
    assert len(outputs[0]) == 10 and outputs[0]["stack_cells.csv"].count(b"\n") > 20
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]
    assert not list(tmp_path.glob("out*/.*.part"))


def test_auto_workers_are_serial_on_the_cpu() -> None:
    from scripts.background import worker_count
    from scripts.errors import BundleInputError

    assert worker_count("auto", "cpu") == 0 and worker_count(3, "cpu") == 3
    with pytest.raises(BundleInputError, match="postprocess_workers"):
        worker_count(-1)


def _item(tmp_path: Path, name: str) -> dict:
    prob = np.where(make_em_stack((2, 48, 48), seed=5)[1] == 0, 0.9, 0.1).astype(np.float32)[None]
    return {
        "pred": torch.from_numpy(prob), "image": torch.from_numpy(prob), "image_path": str(tmp_path / name),
        "image_layout": "zyx", "image_spacing": [],
    }  # fmt: skip


def test_background_error_is_raised_naming_the_file_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scripts.writers
    from ignite.engine import Engine

    def failing_table(path, rows, mode="2d"):  # type: ignore[no-untyped-def]
        raise OSError("simulated failure while measuring")

    monkeypatch.setattr(scripts.writers, "write_cell_table", failing_table)
    writer = scripts.writers.SaveEMResultsd("pred", str(tmp_path / "out"), workers=1)
    engine = Engine(lambda engine, batch: writer(batch))
    writer.attach(engine)
    with pytest.raises(RuntimeError, match=r"results of .*a\.tif failed: OSError: simulated failure"):
        engine.run([_item(tmp_path, "a.tif")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_prob.tif", "a_seg.tif"]


def test_failing_evaluator_drops_queued_jobs_and_finishes_running_ones(tmp_path: Path) -> None:
    """An error (or Ctrl-C) in the evaluator: the image being written is finished whole, the ones queued behind
    it are dropped, the error is raised, and no temporary is left."""
    import scripts.writers
    from ignite.engine import Engine

    writer = scripts.writers.SaveEMResultsd("pred", str(tmp_path / "out"), workers=1, plots=True)

    def step(engine, batch):  # type: ignore[no-untyped-def]
        if batch == "stop":
            raise KeyboardInterrupt
        writer(batch)

    engine = Engine(step)
    writer.attach(engine)
    with pytest.raises(KeyboardInterrupt):
        engine.run([_item(tmp_path, "a.tif"), _item(tmp_path, "b.tif"), "stop"])
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []  # empty if stopped before a started
    assert {n.split("_")[0] for n in names} <= {"a", "b"} and not [n for n in names if n.startswith(".")]
    for stem in {n.split("_")[0] for n in names}:  # every image started is complete
        assert [n for n in names if n.startswith(stem)] == [
            f"{stem}{kind}" for kind in ("_cells.csv", "_morphology.png", "_overlay.png", "_prob.tif", "_seg.tif")
        ]


@pytest.mark.parametrize("workers", [0, 1])
def test_per_section_table_is_the_cell_table_with_spacing(tmp_path: Path, workers: int) -> None:
    """The writer's per-section cells and rows (ids shifted by stack_sections' offsets, area_phys from the image
    pixel size in nm) write the same _seg and _cells.csv as segment_cells and cell_table on the whole stack."""
    import scripts.writers
    from ignite.engine import Engine
    from scripts.instances import segment_cells
    from scripts.io import read_stack
    from scripts.morphology import cell_table, write_cell_table

    pixel_size = {"nm": [40.0, 4.0, 3.0], "source": "test"}  # LoadStackd's entry: the table is in nm
    item = {**_item(tmp_path, "a.tif"), "image_spacing": [1.0, 1.0, 1.0], "image_pixel_size": pixel_size}
    writer = scripts.writers.SaveEMResultsd("pred", str(tmp_path / "out"), workers=workers)
    engine = Engine(lambda engine, batch: writer(batch))
    writer.attach(engine)
    engine.run([item])
    cells = segment_cells(item["pred"].numpy()[0], "2d", **writer.segment_options)
    write_cell_table(str(tmp_path / "expected.csv"), cell_table(cells, "2d", pixel_size["nm"]))
    table = (tmp_path / "out" / "a_cells.csv").read_bytes()
    assert table == (tmp_path / "expected.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(table.decode())))
    assert {row["slice"] for row in rows} == {"0", "1"} and len({row["id"] for row in rows}) == len(rows)
    assert all(float(row["area_phys"]) == int(row["area_px"]) * 12.0 for row in rows)
    np.testing.assert_array_equal(read_stack(str(tmp_path / "out" / "a_seg.tif")).array, cells)
