# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scripts.instances import drop_small_regions, segment_cells
from scripts.morphology import COLUMNS_2D, COLUMNS_3D, cell_table, write_cell_table
from scripts.synthetic import make_em_stack


def _two_cells() -> np.ndarray:
    """One section, 20 x 41: two 20 x 20 cells split by a membrane column at x = 20."""
    prob = np.zeros((1, 20, 41), np.float32)
    prob[:, :, 20] = 1.0
    return prob


def test_small_seed_regions_are_dropped_like_skimage_does() -> None:
    """drop_small_regions = skimage's remove_small_objects (connectivity 1) on every scikit-image version: regions
    of fewer than min_size pixels go, min_size and more stay; diagonal neighbours are separate regions."""
    from skimage.morphology import remove_small_objects

    mask = np.zeros((8, 8), bool)
    mask[0, :3] = True  # 3 pixels
    mask[3:5, 3:5] = True  # 4 pixels
    mask[5, 5] = mask[6, 6] = True  # two diagonal single pixels
    kept = drop_small_regions(mask, 4)
    assert kept.sum() == 4 and kept[3:5, 3:5].all() and kept.dtype == bool
    rng = np.random.default_rng(0)
    for shape in ((40, 40), (6, 20, 20)):
        noisy = rng.random(shape) > 0.6
        for size in (1, 2, 5, 16):
            # scikit-image 0.26 drops regions of at most max_size pixels; 0.25 those of fewer than min_size
            limit = {"max_size": size - 1} if _skimage_uses_max_size() else {"min_size": size}
            expected = remove_small_objects(noisy, **limit)
            np.testing.assert_array_equal(drop_small_regions(noisy, size), expected)


def _skimage_uses_max_size() -> bool:
    import inspect

    from skimage.morphology import remove_small_objects

    return "max_size" in inspect.signature(remove_small_objects).parameters


def test_watershed_separates_cells_by_a_one_pixel_line() -> None:
    labels = segment_cells(_two_cells(), "2d")
    assert labels.dtype == np.uint32 and labels.shape == (1, 20, 41)
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert (labels[0, :, 20] == 0).all() and (labels[0, :, :20] > 0).all() and (labels[0, :, 21:] > 0).all()


def test_2d_ids_are_unique_across_sections() -> None:
    labels = segment_cells(np.concatenate([_two_cells(), _two_cells()]), "2d")
    assert set(np.unique(labels[0]).tolist()) == {0, 1, 2}
    assert set(np.unique(labels[1]).tolist()) == {0, 3, 4}


def test_3d_mode_links_cells_through_sections() -> None:
    labels = segment_cells(np.concatenate([_two_cells(), _two_cells()]), "3d")
    assert set(np.unique(labels).tolist()) == {1, 2}  # dense: no boundary voxels in 3D
    assert labels[0, 5, 5] == labels[1, 5, 5]


def test_small_seeds_are_ignored() -> None:
    prob = _two_cells()
    prob[0, 2:4, 2:4] = 1.0
    prob[0, 2, 2] = 0.0  # a 1-pixel hole in the membrane blob is no cell of its own
    assert segment_cells(prob, "2d", min_seed_size=16).max() == 2


def test_foreground_objects_are_separate_blobs() -> None:
    prob = np.zeros((1, 20, 40), np.float32)
    prob[0, 2:8, 2:8] = 1.0
    prob[0, 10:18, 20:30] = 1.0
    labels = segment_cells(prob, "2d", foreground=True)
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert labels[0, 0, 0] == 0 and labels[0, 5, 5] > 0  # background stays 0


def test_distance_seeds_split_cells_joined_through_a_membrane_gap() -> None:
    prob = np.zeros((3, 20, 41), np.float32)
    prob[:, :, 20] = 1.0
    prob[1, 9:11, 20] = 0.0  # a 2-pixel gap in the middle section joins the two cells' interiors in 3D
    assert segment_cells(prob, "3d", seeds="components").max() == 1  # one seed: both cells merge
    labels = segment_cells(prob, "3d", seeds="distance", seed_distance=2.0)
    assert set(np.unique(labels).tolist()) == {1, 2}
    assert labels[1, 10, 5] != labels[1, 10, 35]


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="instance mode"):
        segment_cells(_two_cells(), "4d")
    with pytest.raises(ValueError, match="seeds"):
        segment_cells(_two_cells(), "2d", seeds="peaks")


def test_2d_table_measures_each_cell(tmp_path: Path) -> None:
    labels = np.zeros((2, 10, 10), np.uint32)
    labels[0, 0:4, 0:4] = 1
    labels[1, 2:8, 2:5] = 2
    rows = cell_table(labels, "2d", spacing=(50.0, 4.0, 4.0))
    assert [(r["id"], r["slice"], r["area_px"]) for r in rows] == [(1, 0, 16), (2, 1, 18)]
    assert rows[0]["area_phys"] == 16 * 16.0
    assert rows[0]["centroid_y"] == 1.5 and rows[1]["centroid_x"] == 3.0
    assert rows[0]["solidity"] == 1.0 and rows[0]["eccentricity"] == 0.0
    assert rows[0]["equivalent_diameter_px"] == pytest.approx(2 * np.sqrt(16 / np.pi))
    write_cell_table(str(tmp_path / "c.csv"), rows)
    read = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert tuple(read[0]) == COLUMNS_2D and len(read) == 2


def test_3d_table_measures_volumes() -> None:
    labels = np.zeros((6, 6, 6), np.uint32)
    labels[1:3, 1:3, 1:5] = 5
    (row,) = cell_table(labels, "3d", spacing=None)
    assert set(row) == set(COLUMNS_3D)
    assert row["volume_px"] == 16 and row["volume_phys"] == ""
    assert row["surface_area_px"] == 2 * (2 * 2 + 2 * 4 + 2 * 4)
    assert row["elongation"] > 1.5  # 2 x 2 x 4 box is elongated along x


def test_empty_table_still_has_a_header(tmp_path: Path) -> None:
    write_cell_table(str(tmp_path / "c.csv"), cell_table(np.zeros((1, 4, 4), np.uint32)))
    assert (tmp_path / "c.csv").read_text().strip() == ",".join(COLUMNS_2D)


def test_sections_on_threads_give_exactly_the_serial_cells_and_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-section cells and morphology run on several threads; ids, labels and every table value are those of a
    plain loop over the sections."""
    import scripts.instances

    image, label = make_em_stack((5, 96, 96), seed=3)
    prob = np.where(label == 0, 0.9, 0.1).astype(np.float32)
    threaded_cells = segment_cells(prob, "2d")
    threaded_rows = cell_table(threaded_cells, "2d", (50.0, 4.0, 4.0))
    monkeypatch.setattr(scripts.instances, "SECTION_THREADS", 1)
    serial_cells = segment_cells(prob, "2d")
    np.testing.assert_array_equal(threaded_cells, serial_cells)
    assert threaded_rows == cell_table(serial_cells, "2d", (50.0, 4.0, 4.0))
    assert len({row["slice"] for row in threaded_rows}) == 5


def _regionprops_rows(section: np.ndarray, pixel: float | None) -> list[dict]:
    """The 2D table as scikit-image's regionprops measures it, one region at a time (the table's definition)."""
    from skimage.measure import regionprops

    return [
        {
            "id": r.label, "area_px": int(r.area), "area_phys": r.area * pixel if pixel else "",
            "equivalent_diameter_px": float(r.equivalent_diameter_area), "perimeter_px": float(r.perimeter),
            "eccentricity": float(r.eccentricity), "solidity": float(r.solidity),
            "centroid_y": float(r.centroid[0]), "centroid_x": float(r.centroid[1]),
        }  # fmt: skip
        for r in regionprops(section)
    ]


@pytest.mark.parametrize("source", ["sample cells", "random blobs"])
def test_2d_table_has_regionprops_values(source: str) -> None:
    """The vectorized 2D table gives regionprops' numbers: area, diameter, perimeter, convex-hull solidity and
    centroid exactly, eccentricity (eigenvalues of moments summed in another order) to float rounding; on the
    sample's cells and on ragged random regions (holes, one-pixel arms, diagonal contacts, image borders)."""
    from scipy import ndimage
    from scripts.io import read_stack
    from scripts.morphology import section_rows_2d

    if source == "sample cells":
        label = read_stack(str(Path(__file__).resolve().parents[1] / "sample" / "em-labels.tif")).array
        sections = segment_cells((label == 0).astype(np.float32))  # ISBI labels: 0 on membrane, 255 in cells
        sections[1, 100:140, 0:30] = 10**6  # a label far above the others
    else:
        rng = np.random.default_rng(0)
        sections = [ndimage.label(rng.random((40, 50)) > p)[0] for p in (0.3, 0.5, 0.7)]
    cells = 0
    for section in sections:
        expected, rows = _regionprops_rows(section, 16.0), section_rows_2d(section, 16.0)
        assert [r["id"] for r in rows] == [r["id"] for r in expected]
        for row, reference in zip(rows, expected):
            assert {k: v for k, v in row.items() if k != "eccentricity"} == {
                k: v for k, v in reference.items() if k != "eccentricity"
            }
            assert row["eccentricity"] == pytest.approx(reference["eccentricity"], rel=1e-12, abs=1e-12)
        cells += len(rows)
    assert cells > 100
