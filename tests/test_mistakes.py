# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The last user mistakes of issue 30: each stops with one line naming the file or key and the fix, or does what a
researcher would expect, and nothing is lost or half-written.

- an override no config defines (``--dataset_dri x``) given to ``python -m monai.bundle run`` or ``python -m bundle``:
  refused with the closest known key; the override files layered in ``--config_file`` define theirs;
- ``output_dir`` equal to a folder the images are read from: refused; a subfolder of ``dataset_dir``: fine, and a
  rerun never segments its own results; inside a zarr volume being read: refused;
- an ``images/`` subfolder beside stacks: both are segmented, and the log says so;
- a file name whose results' names are too long for the output file system: refused before any work, naming the
  file; a result name that fits never fails on its (longer) temporary name;
- a network saved whole (``torch.save(model)``): its weights are used when it is built of the bundle's, PyTorch's
  and MONAI's layers, read without running code from the file; any other pickled object is refused in one line.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import monai
import numpy as np
import pytest
import tifffile
import torch
from conftest import ROOT, run_cli, run_workflow
from monai.bundle import ConfigParser
from scripts.checkpoint import load_weights, read_state_dict
from scripts.data import find_images
from scripts.errors import BundleInputError, find_input_error
from scripts.fusionnet import FusionNet
from scripts.io import write_tiff
from scripts.outputs import LONGEST_RESULT_ENDING, atomic_path, make_output_folder, name_limit
from scripts.overrides import check_command_line, command_line_flags
from scripts.synthetic import make_em_stack

WIDTH = [4, 8, 8, 8, 8]
MONAI_RUN = [str(Path(monai.__file__).parent / "bundle" / "__main__.py"), "run"]  # sys.argv of monai.bundle run
CONFIGS = ROOT / "configs"


def _stack(path: Path, sections: int = 2, seed: int = 1) -> Path:
    write_tiff(path, make_em_stack((sections, 64, 64), seed=seed)[0])
    return path


def _infer(dataset_dir: Path, output_dir: Path, model: Path, **extra: Any) -> dict[str, Any]:
    return dict(dataset_dir=str(dataset_dir), output_dir=str(output_dir), ckpt_path=str(model), features=WIDTH,
                tta=False, plots=False, **extra)  # fmt: skip


def _input_error(config: str, **overrides: Any) -> BundleInputError:
    with pytest.raises(Exception) as info:
        run_workflow(config, **overrides)
    error = find_input_error(info.value)
    assert error is not None, f"expected a BundleInputError, got {info.value!r}"
    return error


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.manual_seed(0)
    torch.save(FusionNet(features=WIDTH).state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------ unknown override keys
def test_command_line_flags_are_read_as_fire_reads_them() -> None:
    args = ["training", "--a", "1", "--b=x=y", "--flag", "--c", "-0.5", "--dataset-dir", "d", "-n", "2", "--", "--z"]
    assert command_line_flags(args) == {"a": "1", "b": "x=y", "flag": None, "c": "-0.5", "dataset_dir": "d", "n": "2"}


def test_unknown_key_names_the_closest_known_one() -> None:
    argv = [*MONAI_RUN, "--config_file", str(CONFIGS / "inference.json"), "--dataset_dri", "x"]
    with pytest.raises(BundleInputError) as info:
        check_command_line(argv)
    assert str(info.value) == (
        "--dataset_dri: is not a setting of inference.json, so it would be ignored. Fix: did you mean --dataset_dir?"
    )
    argv = [*MONAI_RUN, "--config_file", str(CONFIGS / "train.json"), "--epoch=5", "--network_def#features", "[4]"]
    with pytest.raises(BundleInputError, match="did you mean --epochs"):
        check_command_line(argv)
    with pytest.raises(BundleInputError, match="--scheduler: is not a setting of inference.json"):
        check_command_line([*MONAI_RUN, "--config_file", str(CONFIGS / "inference.json"), "--scheduler", "local:1"])


def _base(override: str) -> str:
    return "inference.json" if override.startswith(("inference", "multi_gpu_inference")) else "train.json"


OVERRIDE_FILES = sorted(
    p.name for p in CONFIGS.iterdir() if p.suffix in (".json", ".yaml") and p.name not in ("metadata.json",)
)


@pytest.mark.parametrize("override", OVERRIDE_FILES)
def test_keys_of_layered_override_files_are_known(override: str) -> None:
    """Every top-level key of every config file, given as a flag with that file in ``--config_file`` (after its
    base, as the README runs them), plus ``monai.bundle run``'s own flags and ``key#subkey`` overrides, passes."""
    files = [str(CONFIGS / _base(override)), str(CONFIGS / override)]
    keys = [k.lstrip("+") for k in ConfigParser.load_config_file(files[1]) if not k.startswith("_")]
    flags = [part for key in keys for part in (f"--{key}", "1")]
    argv = [*MONAI_RUN, "--config_file", str(files), *flags, "--meta_file", "m.json", "--logging_file", "l.conf",
            "--tracking", "mlflow", "--run_id", "run", "--network_def#features", "[4]", "--bundle_root", "."]  # fmt: skip
    assert check_command_line(argv)


def test_args_file_keys_are_checked_too(tmp_path: Path) -> None:
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": str(CONFIGS / "inference.json"), "output_dri": "out"}))
    with pytest.raises(BundleInputError, match="--output_dri: .* did you mean --output_dir"):
        check_command_line([*MONAI_RUN, "--args_file", str(args)])
    args.write_text(json.dumps({"config_file": str(CONFIGS / "inference.json"), "output_dir": "out"}))
    assert check_command_line([*MONAI_RUN, "--args_file", str(args), "--tta", "false"])


def test_keys_added_by_tracking_are_known() -> None:
    argv = [*MONAI_RUN, "--config_file", str(CONFIGS / "train.json"), "--trainer", "@train#trainer"]
    with pytest.raises(BundleInputError, match="--trainer: is not a setting of train.json"):
        check_command_line(argv)
    assert check_command_line([*argv, "--tracking", "mlflow", "--is_not_rank0", "false"])


def test_other_command_lines_are_not_checked() -> None:
    """MONAI Label's server, ``python -m bundle`` (which checks its flags itself) and Python callers add keys of
    their own; only ``monai.bundle run`` command lines are checked."""
    assert check_command_line(["/usr/bin/monailabel", "start_server", "--conf", "models", "x"])
    assert check_command_line([str(ROOT / "bundle" / "__main__.py"), "infer", "--anything", "1"])
    assert check_command_line([MONAI_RUN[0], "verify_metadata", "--whatever", "1"])


def test_monai_bundle_run_refuses_a_misspelt_key_before_any_work(tmp_path: Path) -> None:
    """Before the fix the shipped sample was segmented into --output_dir instead."""
    result = run_cli("-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                     "--dataset_dri", str(tmp_path / "mine"), "--output_dir", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line == (
        "error: --dataset_dri: is not a setting of inference.json, so it would be ignored. Fix: did you mean "
        "--dataset_dir?"
    )
    assert not (tmp_path / "out").exists()


def test_bundle_infer_refuses_a_misspelt_key(tmp_path: Path) -> None:
    result = run_cli("-m", "bundle", "infer", "--dataset_dri", "x", "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --dataset_dri: is not a setting of inference.json, so it would be ignored. Fix: did you mean "
        "--dataset_dir?"
    )
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- output_dir and dataset_dir
def test_output_dir_equal_to_an_image_folder_is_refused(tmp_path: Path) -> None:
    _stack(tmp_path / "d" / "a.tif")
    with pytest.raises(BundleInputError, match="results would mix with them") as info:
        find_images(tmp_path / "d", tmp_path / "d")
    assert info.value.what == str(tmp_path / "d") and str(tmp_path / "d" / "results") in info.value.fix
    _stack(tmp_path / "e" / "images" / "a.tif")
    with pytest.raises(BundleInputError, match="results would mix with them"):
        find_images(tmp_path / "e", tmp_path / "e" / "images")


def test_output_dir_beside_images_folder_reruns_on_the_images_alone(tmp_path: Path) -> None:
    """``<d>/images/a.tif`` into ``<d>``: allowed (nothing of ``<d>`` itself is an input); a rerun skips the results."""
    image = str(_stack(tmp_path / "d" / "images" / "a.tif"))
    assert find_images(tmp_path / "d", tmp_path / "d") == [image]
    _stack(tmp_path / "d" / "a_prob.tif")
    _stack(tmp_path / "d" / "a_seg.tif")
    assert find_images(tmp_path / "d", tmp_path / "d") == [image]


def test_output_dir_inside_a_zarr_volume_is_refused(tmp_path: Path) -> None:
    import zarr

    zarr.open(str(tmp_path / "v.zarr"), mode="w", shape=(2, 32, 32), chunks=(1, 32, 32), dtype="uint8")[:] = 1
    with pytest.raises(BundleInputError, match="inside the zarr volume"):
        find_images(tmp_path / "v.zarr", tmp_path / "v.zarr" / "out")
    assert find_images(tmp_path / "v.zarr", tmp_path / "out") == [str(tmp_path / "v.zarr")]


def test_rerun_into_a_subfolder_of_dataset_dir_segments_the_same_images(tmp_path: Path, model: Path) -> None:
    dataset = tmp_path / "d"
    _stack(dataset / "a.tif")
    run_workflow("inference.json", **_infer(dataset, dataset / "results", model))
    first = tifffile.imread(dataset / "results" / "a_prob.tif")
    run_workflow("inference.json", **_infer(dataset, dataset / "results", model))
    assert sorted(p.name for p in (dataset / "results").iterdir()) == ["a_cells.csv", "a_prob.tif", "a_seg.tif"]
    np.testing.assert_array_equal(tifffile.imread(dataset / "results" / "a_prob.tif"), first)


# ---------------------------------------------------------------------------------- images/ beside other stacks
def test_images_folder_beside_stacks_segments_both(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    beside, inside = _stack(tmp_path / "a.tif"), _stack(tmp_path / "images" / "b.tif")
    _stack(tmp_path / "x-labels.tif")
    with caplog.at_level(logging.INFO, logger="scripts.data"):
        assert sorted(find_images(tmp_path)) == [str(beside), str(inside)]
    assert f"{tmp_path}: segmenting 1 image(s) in images/ and 1 beside it" in caplog.text
    _stack(tmp_path / "images" / "a.tif")
    with pytest.raises(BundleInputError, match="one would overwrite the other"):
        find_images(tmp_path)


def test_images_folder_alone_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image = _stack(tmp_path / "images" / "b.tif")
    with caplog.at_level(logging.INFO, logger="scripts.data"):
        assert find_images(tmp_path) == [str(image)]
    assert "beside it" not in caplog.text


# ----------------------------------------------------------------------------------------------- long file names
def test_too_long_result_names_are_refused_before_any_work(tmp_path: Path, model: Path) -> None:
    limit = name_limit(tmp_path)
    stem = "s" * (limit - len(LONGEST_RESULT_ENDING) + 1)  # the image's own name fits, its plot's does not
    image = tmp_path / "d" / f"{stem}.tif"
    image.parent.mkdir()
    tifffile.imwrite(image, make_em_stack((2, 64, 64), seed=1)[0])
    error = _input_error("inference.json", **_infer(image.parent, tmp_path / "out", model))
    assert error.what == str(image) and "would be longer than the" in error.problem
    assert error.fix == f"rename it to at most {limit - len(LONGEST_RESULT_ENDING)} characters before the extension " \
        "(results are named after it)"  # fmt: skip
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_name_that_fits_is_written_despite_its_longer_temporary(tmp_path: Path) -> None:
    """The temporary ``.<name>.<host>-<pid>.<random>.part`` is longer than the name: its name part is cut."""
    path = tmp_path / ("n" * (name_limit(tmp_path) - 4) + ".tif")
    write_tiff(path, np.zeros((8, 8), np.uint8))
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_name_too_long_for_the_file_system_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / ("n" * name_limit(tmp_path) + ".csv")
    with pytest.raises(BundleInputError, match="longer than the .* a file name may have here") as info:
        with atomic_path(path) as tmp:
            Path(tmp).write_text("x")
    assert info.value.what == str(path) and "shorter name" in info.value.fix
    assert list(tmp_path.iterdir()) == []
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENAMETOOLONG


# ----------------------------------------------------------------------------------------- whole pickled networks
def test_a_whole_pickled_fusionnet_is_read_as_its_weights(tmp_path: Path, model: Path) -> None:
    network = FusionNet(features=WIDTH)
    network.load_state_dict(torch.load(model, weights_only=True))
    torch.save(network, tmp_path / "whole.pt")
    torch.save({"model": network}, tmp_path / "wrapped.pt")
    for name in ("whole.pt", "wrapped.pt"):
        state = read_state_dict(tmp_path / name)
        assert state.keys() == network.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())
    with pytest.raises(BundleInputError, match=r'pass --features "\[4, 8, 8, 8, 8\]"'):
        load_weights(FusionNet(features=[8, 8, 8, 8, 8]), tmp_path / "whole.pt")
    # through inference.json: the same results as from the state dict
    _stack(tmp_path / "d" / "a.tif")
    run_workflow("inference.json", **_infer(tmp_path / "d", tmp_path / "from_whole", tmp_path / "whole.pt"))
    run_workflow("inference.json", **_infer(tmp_path / "d", tmp_path / "from_state", model))
    probs = [tifffile.imread(tmp_path / run / "a_prob.tif") for run in ("from_whole", "from_state")]
    np.testing.assert_array_equal(*probs)


class _Payload:
    """A pickled object that would run ``function(argument)`` when unpickled."""

    def __init__(self, function: Any, argument: str) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self) -> tuple:
        return self.function, (self.argument,)


@pytest.mark.parametrize("function", [os.makedirs, make_output_folder], ids=["os", "bundle"])
def test_other_pickled_objects_are_refused_without_running_them(tmp_path: Path, function: Any) -> None:
    """A pickle that calls a function (even one of the bundle's own, not a network class) is never unpickled."""
    marker = tmp_path / "ran"
    torch.save({"model": _Payload(function, str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(BundleInputError) as info:
        read_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()
    assert "is not a state dict and needs code to be unpickled" in info.value.problem
    assert "torch.save(model.state_dict()" in info.value.fix and "\n" not in str(info.value)
