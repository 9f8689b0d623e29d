# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Issue 16 through the workflows: no result overwritten or taken as input, paths that are paths, every inference
setting checked where it is read, no stale temporaries, Ctrl-C in one line, normalization that cannot overflow.

Format reading itself (every TIFF page, photometric, planar configuration, OME axes, codecs) is in test_io.py.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from conftest import ROOT, run_workflow
from scripts.errors import BundleInputError, find_input_error
from scripts.fusionnet import FusionNet
from scripts.io import write_tiff
from scripts.outputs import atomic_path, remove_stale_temporaries
from scripts.synthetic import make_em_stack

WIDTH = [4, 8, 8, 8, 8]
FAST = {"plots": False, "instance_mode": "none"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(FusionNet(features=WIDTH).state_dict(), path)
    return path


def _infer(model: Path, dataset_dir: Any, output_dir: Any, **extra: Any) -> dict[str, Any]:
    return {"dataset_dir": dataset_dir, "output_dir": output_dir, "ckpt_path": str(model), "features": WIDTH, **extra}


def _input_error(config: str | list[str], **overrides: Any) -> BundleInputError:
    with pytest.raises(Exception) as info:
        run_workflow(config, **overrides)
    error = find_input_error(info.value)
    assert error is not None, f"expected a BundleInputError, got {info.value!r}"
    assert error.problem and error.fix
    return error


def _image(path: Path, seed: int = 1) -> np.ndarray:
    image = make_em_stack((2, 48, 48), seed=seed)[0]
    if path.name.endswith(".nii.gz"):
        import nibabel as nib

        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), np.eye(4)), path)
    elif path.suffix == ".png":
        import itk

        path.parent.mkdir(parents=True, exist_ok=True)
        itk.imwrite(itk.image_from_array(image[0]), str(path))
    else:
        write_tiff(path, image)
    return image


# ---------------------------------------------------------------------------------- no result is overwritten
@pytest.mark.parametrize(
    "names", [("x.tif", "x.png"), ("a.tif", "a.tiff"), ("a.nii.gz", "a.tif"), ("two.ome.tif", "two.tif")],
    ids=["tif+png", "tif+tiff", "nifti+tif", "ome+tif"],
)  # fmt: skip
@pytest.mark.parametrize("config", ["inference.json", "inference_stream.json"])
def test_inputs_sharing_a_stem_are_refused_before_inference(
    tmp_path: Path, model: Path, names: tuple[str, str], config: str
) -> None:
    for name in names:
        _image(tmp_path / "in" / name)
    configs = ["inference.json", config] if config != "inference.json" else config
    error = _input_error(configs, **_infer(model, str(tmp_path / "in"), str(tmp_path / "out"), **FAST))
    assert all(str(tmp_path / "in" / name) in error.what for name in names)
    assert "one would overwrite the other" in error.problem and "rename one of them" in error.fix
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_results_of_an_earlier_run_are_not_inputs(tmp_path: Path, model: Path) -> None:
    _image(tmp_path / "in" / "a.tif")
    run_workflow("inference.json", **_infer(model, str(tmp_path / "in"), str(tmp_path / "in" / "results")))
    for result in (tmp_path / "in" / "results").iterdir():  # a user copies the results next to the images
        result.rename(tmp_path / "in" / result.name)
    assert {"a_prob.tif", "a_seg.tif", "a_overlay.png"} <= {p.name for p in (tmp_path / "in").iterdir()}
    run_workflow("inference.json", **_infer(model, str(tmp_path / "in"), str(tmp_path / "out"), **FAST))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_prob.tif"]  # no a_prob_prob.tif


def test_output_folder_equal_to_the_dataset_folder_is_refused(tmp_path: Path, model: Path) -> None:
    _image(tmp_path / "in" / "a.tif")
    error = _input_error("inference.json", **_infer(model, str(tmp_path / "in"), str(tmp_path / "in" / "."), **FAST))
    assert "the folder the images are read from" in error.problem and "--output_dir" in error.fix
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.tif"]


def test_empty_output_dir_is_refused(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _image(tmp_path / "in" / "a.tif")
    monkeypatch.chdir(tmp_path)
    error = _input_error("inference.json", **_infer(model, str(tmp_path / "in"), "", **FAST))
    assert error.what == "output_dir" and error.problem == "is empty"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


# ---------------------------------------------------------------------------------------- paths are paths
def test_path_setting_takes_back_what_fire_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.settings import path_setting

    monkeypatch.setattr(sys, "argv", ["x", "--dataset_dir", "2024.10", "--output_dir=scan,v2"])
    assert path_setting(2024.1, "dataset_dir") == "2024.10"  # fire made a float of the folder name
    assert path_setting(("scan", "v2"), "output_dir") == "scan,v2"
    monkeypatch.setattr(sys, "argv", ["x"])
    assert path_setting(20240115, "dataset_dir") == "20240115"
    assert path_setting(("scan", "v2"), "dataset_dir") == "scan,v2"
    with pytest.raises(BundleInputError, match="is empty"):
        path_setting("  ", "output_dir")
    with pytest.raises(BundleInputError, match="must be a path"):
        path_setting(None, "ckpt_path")


@pytest.mark.parametrize("command", ["bundle", "monai.bundle"])
def test_folder_names_fire_parses_as_numbers_or_tuples(tmp_path: Path, model: Path, command: str) -> None:
    """``--dataset_dir 20240115`` (an int to fire) and ``--output_dir scan,v2`` (a tuple) are folders."""
    _image(tmp_path / "20240115" / "a.tif")
    args = ["infer"] if command == "bundle" else ["run", "--config_file", str(ROOT / "configs" / "inference.json")]
    args += ["--dataset_dir", "20240115", "--output_dir", "scan,v2", "--ckpt_path", str(model)]
    args += ["--features", str(WIDTH), "--plots", "false", "--instance_mode", "none"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if command == "monai.bundle":
        args += ["--bundle_root", str(ROOT), "--meta_file", str(ROOT / "configs" / "metadata.json")]
    result = subprocess.run(
        [sys.executable, "-m", command, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "scan,v2" / "a_prob.tif").is_file()


@pytest.mark.parametrize("configs", [["train.json"], ["train.json", "evaluate.json"]], ids=["train", "evaluate"])
def test_train_and_evaluate_write_into_folders_fire_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, labelled_dir: Path, model: Path, configs: list[str]
) -> None:
    """train.json and evaluate.json hand ``output_dir`` to MONAI's handlers (TensorBoard, CheckpointSaver,
    MetricsSaver) as the path typed, also when fire made a tuple (``scan,v2``) or an int (``20240115``) of it."""
    from conftest import workflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x"])
    for parsed, folder in ((("scan", "v2"), "scan,v2"), (20240115, "20240115")):
        # models go to model_dir (models/ under bundle_root by default), given here so the shipped one stays
        overrides = dict(dataset_dir=str(labelled_dir), ckpt_path=str(model), features=WIDTH, model_dir="models_here")
        wf = workflow(configs, output_dir=parsed, **overrides)
        assert wf.parser.get_parsed_content("output_folder") == folder
        if len(configs) == 1:
            handlers = wf.parser.get_parsed_content("train#handlers")
            savers = [h for h in handlers if hasattr(h, "save_dir")]  # CheckpointSaver, TrainingCheckpoint
            assert [str(h.save_dir) for h in savers] == ["models_here", folder]
        else:
            assert wf.parser.get_parsed_content("validate#handlers")[-1].save_dir == folder  # MetricsSaver
        assert (tmp_path / folder).is_dir()


# ---------------------------------------------------------------------------- settings checked where read
BAD_SETTINGS: list[tuple[str, object, str, str]] = [
    ("overlap", "quarter", "must be in [0, 1)", "--overlap 0.25"),
    ("overlap", 0.99, "10816 windows on a 2048x2048 image instead of 9", "--overlap 0.25"),
    ("blend_mode", "gausian", "unknown value 'gausian'", "did you mean --blend_mode gaussian?"),
    ("target", "membrain", "unknown value 'membrain'", "did you mean --target membrane?"),
    ("device", "gpu", "is not a device name", "--device cpu"),
]


@pytest.mark.parametrize("key,value,problem,fix", BAD_SETTINGS, ids=[f"{k}={v}" for k, v, _, _ in BAD_SETTINGS])
@pytest.mark.parametrize("config", ["inference.json", "inference_stream.json"])
def test_bad_inference_setting_names_the_key_and_fix(
    tmp_path: Path, model: Path, key: str, value: object, problem: str, fix: str, config: str
) -> None:
    _image(tmp_path / "in" / "a.tif")
    configs = ["inference.json", config] if config != "inference.json" else config
    error = _input_error(configs, **_infer(model, str(tmp_path / "in"), str(tmp_path / "out"), **{key: value}))
    assert error.what == key and problem in error.problem and fix in error.fix
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path: Path, model: Path) -> None:
    _image(tmp_path / "in" / "a.tif")
    error = _input_error("inference.json", **_infer(model, str(tmp_path / "in"), str(tmp_path / "out"), device="cuda"))
    assert error.what == "device" and "no CUDA GPU is visible" in error.problem


def test_overlap_up_to_the_limit_is_accepted() -> None:
    from scripts.inferers import MembraneInferer

    MembraneInferer(roi_size=[256, 256], overlap=0.75)
    with pytest.raises(BundleInputError, match="at most 16 passes"):
        MembraneInferer(roi_size=[256, 256], overlap=0.8)


def test_hdf5_dataset_with_no_sections(tmp_path: Path, model: Path) -> None:
    import h5py

    (tmp_path / "in").mkdir()
    with h5py.File(tmp_path / "in" / "empty.h5", "w") as f:
        f.create_dataset("raw", shape=(0, 48, 48), dtype=np.uint8)
    for config in ("inference.json", ["inference.json", "inference_stream.json"]):
        error = _input_error(config, **_infer(model, str(tmp_path / "in"), str(tmp_path / "out"), **FAST))
        assert "empty.h5" in error.what and "holds no pixels (shape (0, 48, 48))" in error.problem


def test_3d_torchscript_model_under_the_2d_config(tmp_path: Path) -> None:
    _image(tmp_path / "in" / "a.tif")
    scripted = torch.jit.script(FusionNet(spatial_dims=3, features=WIDTH).eval())
    torch.jit.save(scripted, tmp_path / "model.ts")
    error = _input_error("inference.json", **_infer(tmp_path / "model.ts", str(tmp_path / "in"), str(tmp_path / "o")))
    assert error.what == str(tmp_path / "model.ts") and "holds a 3D network, but network_def is 2D" in error.problem
    assert "configs/inference_3d.json" in error.fix
    # and a 2D TorchScript model under the 3D configs asks for 3D weights, not for --spatial_dims 2
    torch.jit.save(torch.jit.script(FusionNet(features=WIDTH).eval()), tmp_path / "model2d.ts")
    overrides = _infer(tmp_path / "model2d.ts", str(tmp_path / "in"), str(tmp_path / "o"), roi_size=[16, 32, 32])
    error = _input_error(["inference.json", "inference_3d.json"], **overrides)
    assert "holds a 2D network, but network_def is 3D" in error.problem
    assert "--ckpt_path to 3D weights" in error.fix and "--spatial_dims" not in error.fix


# -------------------------------------------------------------------------------------------------- faults
def _killed_while_writing(target: Path) -> None:
    """A process that dies (SIGKILL) while it writes ``target`` through ``atomic_path``."""
    code = f"""
        import os, signal
        from scripts.outputs import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            open(tmp, "wb").write(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, timeout=120)
    assert result.returncode == -signal.SIGKILL


@pytest.mark.parametrize("config", ["inference.json", "inference_stream.json"])
def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path: Path, model: Path, config: str) -> None:
    out = tmp_path / "out"
    _killed_while_writing(out / "a_prob.tif")
    stale = [p.name for p in out.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".a_prob.tif.") and stale[0].endswith(".part")
    _image(tmp_path / "in" / "a.tif")
    configs = ["inference.json", config] if config != "inference.json" else config
    run_workflow(configs, **_infer(model, str(tmp_path / "in"), str(out), **FAST))
    assert sorted(p.name for p in out.iterdir()) == ["a_prob.tif"]


def test_temporaries_being_written_by_a_live_process_stay(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x.tif") as tmp:
        Path(tmp).write_bytes(b"being written")
        assert remove_stale_temporaries(tmp_path) == [] and Path(tmp).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


def test_ctrl_c_ends_with_one_line() -> None:
    """The excepthook ``scripts`` installs (``python -m monai.bundle run``): one line, and the process ends by
    SIGINT, as Python ends an interrupted program (exit status 130 in a shell)."""
    code = "import scripts\nraise KeyboardInterrupt"
    env = {k: v for k, v in os.environ.items() if k != "FUSIONNET_TRACEBACK"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode in (-signal.SIGINT, 130)
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: interrupted (Ctrl-C)")


def test_ctrl_c_in_the_bundle_cli_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import bundle.__main__ as entry

    def interrupted(**_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(entry.COMMANDS, "infer", interrupted)
    monkeypatch.setattr(sys, "argv", ["bundle", "infer"])
    assert entry.main() == 130
    assert capsys.readouterr().err.strip().startswith("error: interrupted (Ctrl-C)")


def test_ctrl_c_during_a_run_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """MONAI's StatsHandler logs the exception that stops a run with its traceback; Ctrl-C's is left out."""
    with caplog.at_level(logging.ERROR):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            logging.getLogger("ignite.engine").exception("Exception: ")
    assert caplog.records[-1].getMessage().startswith("stopped: interrupted") and not caplog.records[-1].exc_info


# ------------------------------------------------------------------------------------------------- numbers
def test_huge_finite_values_give_a_finite_probability(tmp_path: Path, model: Path) -> None:
    from scripts.transforms import normalize_sections

    image = make_em_stack((2, 48, 48), seed=3)[0].astype(np.float32)
    huge = image / image.max() * np.float32(3.0e38)
    huge[1] -= np.float32(3.0e38)  # the second section spans -3e38 .. 0
    normalized = normalize_sections(huge)
    assert torch.isfinite(normalized).all()
    np.testing.assert_allclose(normalized[0], normalize_sections(image)[0], atol=1e-5)
    write_tiff(tmp_path / "in" / "huge.tif", huge)
    run_workflow("inference.json", **_infer(model, str(tmp_path / "in"), str(tmp_path / "out"), **FAST))
    assert np.isfinite(tifffile.imread(tmp_path / "out" / "huge_prob.tif")).all()


# ------------------------------------------------------------------------------------------- NIfTI in and out
def test_nifti_input_gives_nifti_results_with_its_affine(tmp_path: Path, model: Path) -> None:
    import nibabel as nib

    zyx = make_em_stack((3, 48, 40), seed=5)[0]
    affine = np.array([[0.0, -4.0, 0.0, 10.0], [4.0, 0.0, 0.0, -3.0], [0.0, 0.0, 50.0, 7.5], [0.0, 0.0, 0.0, 1.0]])
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), affine), tmp_path / "in" / "v.nii.gz")
    write_tiff(tmp_path / "in" / "w.tif", zyx)  # the same volume as a TIFF stack
    run_workflow("inference.json", **_infer(model, str(tmp_path / "in"), str(tmp_path / "out"), plots=False))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["v_cells.csv", "v_prob.nii.gz", "v_seg.nii.gz", "w_cells.csv", "w_prob.tif", "w_seg.tif"]
    for kind, dtype in (("prob", np.float32), ("seg", np.uint32)):
        result = nib.load(tmp_path / "out" / f"v_{kind}.nii.gz")
        assert result.shape == (40, 48, 3) and result.get_data_dtype() == dtype
        np.testing.assert_allclose(result.affine, affine)
        assert result.header.get_zooms() == (4.0, 4.0, 50.0)
        as_tiff = tifffile.imread(tmp_path / "out" / f"w_{kind}.tif")
        np.testing.assert_array_equal(np.asarray(result.dataobj), as_tiff.transpose(2, 1, 0))
