# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The network's scale: the zoom chosen from the pixel size and the image, and resampling to it and back."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import ROOT, TINY, run_workflow
from monai.data import MetaTensor
from sample_crop import CROP_OVERRIDES
from scripts.errors import BundleInputError
from scripts.fusionnet import FusionNet
from scripts.inferers import MembraneInferer
from scripts.io import PixelSize
from scripts.scale import (
    ISBI_PIXEL_SIZE_NM,
    ZoomEvidence,
    ZoomPolicy,
    choose_zoom,
    model_pixel_size,
    parse_pixel_size,
    parse_zoom,
    refined_zoom,
    resample,
    sample_windows,
    write_model_pixel_size,
)
from scripts.transforms import ChooseZoomd


def test_pixel_size_setting_forms() -> None:
    assert parse_pixel_size("file") is None and parse_pixel_size(None) is None
    assert parse_pixel_size(8) == (None, 8.0, 8.0)
    assert parse_pixel_size([6, 8]) == (None, 6.0, 8.0)
    assert parse_pixel_size([50, 8, 8]) == (50.0, 8.0, 8.0)
    for bad in (0, -4, [1, 2, 3, 4], "8nm", float("nan"), True):
        with pytest.raises(BundleInputError, match="pixel_size"):
            parse_pixel_size(bad)


def test_zoom_setting_forms() -> None:
    assert parse_zoom("auto", 2) == "auto" and parse_zoom("pixel_size", 2) == "pixel_size"
    assert parse_zoom(2, 2) == (2.0, 2.0) and parse_zoom([1, 2, 2], 3) == (1.0, 2.0, 2.0)
    for bad in ("big", 0, [1, 2, 3]):
        with pytest.raises(BundleInputError, match="zoom"):
            parse_zoom(bad, 2)


def _evidence(entropies: dict[float, float], fraction: float = 0.25):
    return lambda: [ZoomEvidence(z, e, fraction) for z, e in sorted(entropies.items())]


MODEL = ISBI_PIXEL_SIZE_NM


def test_the_pixel_size_sets_the_zoom_when_the_image_agrees() -> None:
    # 8 nm ssTEM: its map is about as decided at its physical zoom (2) as anywhere: the pixel size stands
    found = _evidence({1.0: 0.30, 1.414: 0.25, 2.0: 0.24, 2.828: 0.25, 4.0: 0.33})
    choice = choose_zoom("auto", 2, MODEL, (None, 8.0, 8.0), "TIFF resolution tags (cm)", evidence=found)
    assert choice.zoom == (2.0, 2.0) and "confirmed" in choice.reason
    assert "8 x 8 nm (TIFF resolution tags (cm))" in choice.describe("x.tif")


def test_the_image_overrules_a_pixel_size_of_another_modality() -> None:
    # 10 nm FIB-SEM: membranes already thin, its map at the physical zoom 2.5 is far less decided than at 1
    found = _evidence({0.707: 0.33, 1.0: 0.315, 1.414: 0.336, 2.0: 0.40, 2.5: 0.42, 2.828: 0.42})
    choice = choose_zoom("auto", 2, MODEL, (10.0, 10.0, 10.0), "ImageJ unit 'micron'", evidence=found)
    assert abs(choice.zoom[0] - 1.0) < 0.2 and "another modality" in choice.reason
    # --zoom pixel_size follows the pixel size whatever the image says
    physical = choose_zoom("pixel_size", 2, MODEL, (10.0, 10.0, 10.0), "ImageJ unit 'micron'", evidence=found)
    assert physical.zoom == (2.5, 2.5)


def test_an_implausible_map_at_the_pixel_size_is_overruled() -> None:
    entropies = {0.707: 0.30, 1.0: 0.28, 2.0: 0.29}
    found = lambda: [ZoomEvidence(z, e, 0.9 if z == 2.0 else 0.25) for z, e in entropies.items()]  # noqa: E731
    choice = choose_zoom("auto", 2, MODEL, (None, 8.0, 8.0), "file", evidence=found)
    assert choice.zoom[0] < 1.5


def test_coarse_isotropic_voxels_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """FIB-SEM coarser than 1.5x the model's 10 nm merges neurons (20 nm: 0.64 V_rand): the log line says so."""
    policy = ZoomPolicy("auto", "file", MODEL, 2, isotropic_pixel_size=(10.0, 10.0, 10.0))
    with caplog.at_level(logging.INFO):
        fine = policy.choose("fine.tif", None, PixelSize((8.0, 8.0, 8.0), "file"))
        coarse = policy.choose("coarse.tif", None, PixelSize((20.0, 20.0, 20.0), "file"))
    assert fine.zoom == (0.8, 0.8) and not fine.coarse and coarse.zoom == (2.0, 2.0) and coarse.coarse
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("coarse.tif") and "lose thin neurites" in warned[0]


def test_without_a_pixel_size_the_zoom_is_estimated_or_one() -> None:
    far = choose_zoom(
        "auto", 2, MODEL, None, "unknown", evidence=_evidence({1.0: 0.37, 2.0: 0.26, 2.828: 0.25, 4.0: 0.3})
    )
    assert 2.0 < far.zoom[0] < 3.5 and "estimated" in far.reason and "--pixel_size" in far.reason
    near = choose_zoom("auto", 2, MODEL, None, "unknown", evidence=_evidence({0.707: 0.25, 1.0: 0.23, 1.414: 0.228}))
    assert near.zoom == (1.0, 1.0) and "consistent" in near.reason
    assert "pixel size unknown" in near.describe("x.png") and "FIB-SEM" not in near.reason
    two_scales = choose_zoom("auto", 2, MODEL, None, "unknown", evidence=_evidence({0.707: 0.25, 1.0: 0.23, 1.414: 0.228}),
                             isotropic_nm=(10.0, 10.0, 10.0))  # fmt: skip
    assert "model's 50 x 4 x 4 nm (ssTEM) or 10 x 10 x 10 nm (FIB-SEM)" in two_scales.reason
    nothing = choose_zoom("pixel_size", 2, MODEL, None, "unknown")
    assert nothing.zoom == (1.0, 1.0) and "assumed the model's 50 x 4 x 4 nm" in nothing.reason


def test_flag_replaces_the_file_and_a_fixed_zoom_wins() -> None:
    choice = choose_zoom("pixel_size", 2, MODEL, (None, 4.0, 4.0), "file", flag_nm=(None, 8.0, 8.0))
    assert choice.zoom == (2.0, 2.0) and choice.pixel_size_source == "--pixel_size"
    assert choose_zoom((1.5, 1.5), 2, MODEL, None, "unknown").zoom == (1.5, 1.5)
    anisotropic = choose_zoom("pixel_size", 3, MODEL, (100.0, 8.0, 8.0), "file")
    assert anisotropic.zoom == (2.0, 2.0, 2.0)


def test_refined_zoom_finds_the_vertex_between_ladder_steps() -> None:
    zooms = [2 ** (k / 4) for k in range(-4, 5)]
    found = [ZoomEvidence(z, (np.log2(z) - 0.3) ** 2 + 0.2, 0.25) for z in zooms]
    best = min(found, key=lambda e: e.entropy)
    assert abs(np.log2(refined_zoom(found, best)) - 0.3) < 0.05


def test_sample_windows_are_network_sized() -> None:
    sections = torch.rand(2, 1, 300, 200)
    for zoom in (0.35, 1.0, 2.7, 4.0):
        windows = sample_windows(sections, zoom)
        assert windows.shape[:2] == (2, 1) and windows.shape[-1] % 16 == 0 and windows.shape[-1] <= 256
    assert sample_windows(torch.rand(1, 1, 20, 20), 0.35).shape[-1] == 16  # a tiny image still gives a window


@pytest.fixture(scope="module")
def tiny_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return FusionNet(2, 1, 1, features=TINY).eval()


def test_zoomed_inference_equals_resampling_by_hand(tiny_network: torch.nn.Module) -> None:
    """A 4 nm model on an 8 nm input: resample the input 2x, infer, resample the probability back."""
    inferer = MembraneInferer(roi_size=[64, 64], overlap=0.25)
    image = torch.rand(1, 1, 3, 40, 48)
    with torch.no_grad():
        zoomed = inferer(image, tiny_network, zoom=(2.0, 2.0))
        by_hand = [
            resample(inferer(resample(image[:, :, z], (80, 96)), tiny_network), (40, 48)).clamp(0, 1) for z in range(3)
        ]
        from_meta = inferer(MetaTensor(image, meta={"zoom": torch.tensor([2.0, 2.0])}), tiny_network)
    assert zoomed.shape == image.shape
    torch.testing.assert_close(zoomed, torch.stack(by_hand, dim=2), atol=1e-5, rtol=0)
    torch.testing.assert_close(from_meta, zoomed)
    # within the tolerance of 1 the network runs on the input's own grid
    with torch.no_grad():
        torch.testing.assert_close(inferer(image, tiny_network, zoom=(1.05, 1.05)), inferer(image, tiny_network))


def test_choose_zoomd_records_the_zoom_and_logs_what_it_assumed(
    tiny_network: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    inferer = MembraneInferer(roi_size=[64, 64])
    policy = ZoomPolicy("pixel_size", "file", MODEL, 2, tiny_network, inferer)
    entry = {"nm": [float("nan"), 8.0, 8.0], "source": "TIFF resolution tags (cm)"}
    data = {"image": torch.rand(1, 2, 32, 32), "image_path": "/d/x.tif", "image_pixel_size": entry}
    with caplog.at_level(logging.INFO, logger="scripts.scale"):
        out = ChooseZoomd("image", policy)(data)
    assert isinstance(out["image"], MetaTensor) and out["image_zoom"] == [2.0, 2.0]
    assert "x.tif: pixel size 8 x 8 nm (TIFF resolution tags (cm)); network at zoom 2 x 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scripts.scale"):
        ChooseZoomd("image", policy)({**data, "image_pixel_size": {"nm": [], "source": "unknown"}})
    assert "pixel size unknown" in caplog.text and "--pixel_size" in caplog.text
    flagged = ZoomPolicy("auto", [8, 8], MODEL, 2, tiny_network, inferer)
    assert flagged.choose("x", None, None).zoom == (2.0, 2.0)  # no evidence to be had: the flag alone


def test_model_pixel_size_sidecar(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.pt"
    assert model_pixel_size(str(ckpt)) == ISBI_PIXEL_SIZE_NM
    assert model_pixel_size(str(ROOT / "models" / "model.pt")) == ISBI_PIXEL_SIZE_NM
    write_model_pixel_size(str(ckpt), [30, 8, 8])
    assert model_pixel_size(str(ckpt)) == (30.0, 8.0, 8.0)
    (tmp_path / "model.json").write_text(json.dumps({"pixel_size_nm": "eight"}))
    with pytest.raises(BundleInputError, match="model.json"):
        model_pixel_size(str(ckpt))


def test_metadata_states_the_models_pixel_size() -> None:
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert tuple(meta["network_data_format"]["inputs"]["image"]["pixel_size_nm"]) == ISBI_PIXEL_SIZE_NM


def _write_at(path: Path, image: np.ndarray, nm: float | None) -> None:
    """A TIFF as microscopes and Fiji save it: resolution tags in pixels per centimetre (or none)."""
    kwargs = {} if nm is None else {"resolution": (1e7 / nm, 1e7 / nm), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, image, photometric="minisblack", **kwargs)


def test_inference_at_the_files_pixel_size_keeps_the_input_grid(tmp_path: Path) -> None:
    """inference.json on an 8 nm TIFF: the network runs at zoom 2 and every result lies on the input's grid."""
    crop = tifffile.imread(ROOT / "sample" / "em-volume.tif")[0, :96, :80]
    (tmp_path / "in").mkdir()
    _write_at(tmp_path / "in" / "em8.tif", crop, 8.0)
    run_workflow(
        "inference.json",
        dataset_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "out"),
        tta=False,
        **{**CROP_OVERRIDES, "instance_mode": "2d"},  # zoom pixel_size: the file's 8 nm alone
    )
    prob = tifffile.imread(tmp_path / "out" / "em8_prob.tif")
    seg = tifffile.imread(tmp_path / "out" / "em8_seg.tif")
    assert prob.shape == seg.shape == (96, 80) and prob.dtype == np.float32 and seg.dtype == np.uint32
    rows = (tmp_path / "out" / "em8_cells.csv").read_text().splitlines()
    assert len(rows) > 1


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "isbi2012").is_dir(), reason="needs ../shared/data")
def test_scale_check_resamples_labelled_sections_and_scores_each_way() -> None:
    from bundle.scale_check import format_scale_check, resampled_sstem, run_scale_check

    image, label = resampled_sstem([0], 8.0)
    assert image.shape == label.shape == (1, 256, 256) and set(np.unique(label)) <= {0, 255}
    rows = run_scale_check(sections=(0,), pixel_sizes=(8.0,), fibsem=())
    assert [r["way"] for r in rows] == ["pixel size known", "no pixel size", "as is (zoom 1)"]
    known, _, as_is = rows
    assert known["zoom"] == 2.0 and as_is["zoom"] == 1.0 and known["v_rand"] > as_is["v_rand"]
    assert "| ssTEM 8 nm | pixel size known | 2 |" in format_scale_check(rows)


def test_streaming_equals_whole_volume_at_the_files_pixel_size(tmp_path: Path) -> None:
    """A 6 nm stack (resolution tags): streaming and whole-volume inference resample it alike, same results."""
    image = tifffile.imread(ROOT / "sample" / "em-volume.tif")[:2, :96, :112]
    (tmp_path / "in").mkdir()
    _write_at(tmp_path / "in" / "em6.tif", image, 6.0)
    options = {**CROP_OVERRIDES, "instance_mode": "2d", "tta": False}
    run_workflow("inference.json", dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "whole"), **options)
    configs = ["inference.json", "inference_stream.json"]
    run_workflow(configs, dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "stream"), **options)
    for suffix in ("_prob.tif", "_seg.tif"):
        whole, streamed = (tifffile.imread(tmp_path / d / f"em6{suffix}") for d in ("whole", "stream"))
        assert whole.shape == (2, 96, 112)
        np.testing.assert_array_equal(streamed, whole)
    table = (tmp_path / "whole" / "em6_cells.csv").read_text().splitlines()
    area_px, area_phys = table[0].split(",").index("area_px"), table[0].split(",").index("area_phys")
    first = table[1].split(",")
    assert float(first[area_phys]) == pytest.approx(float(first[area_px]) * 36.0)  # nm², from the 6 nm pixels


def test_scale_augmentation_is_an_option_of_training() -> None:
    """train.json's random zoom of image and target together: off by default (not measured in cross-validation),
    and keeps the patch size when on."""
    from monai.bundle import ConfigParser
    from monai.transforms import RandZoomd

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    assert parser["scale_augmentation_prob"] == 0.0
    parser["scale_augmentation_prob"], parser["scale_augmentation_range"] = 1.0, [2.0, 2.0]
    zoom = next(t for t in parser.get_parsed_content("train#preprocessing").transforms if isinstance(t, RandZoomd))
    label = torch.zeros(1, 32, 32)
    label[:, 15:17] = 1  # a 2-pixel membrane
    out = zoom({"image": torch.rand(1, 32, 32), "label": label})
    assert out["image"].shape == out["label"].shape == (1, 32, 32)
    assert int(out["label"][0, :, 0].sum()) == 4  # twice as wide, still a binary target
