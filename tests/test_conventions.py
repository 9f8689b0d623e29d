# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""MONAI bundle conventions: ``monai.bundle run`` with meta and logging files, and YAML files merged over JSON."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from conftest import ROOT, run_cli, run_workflow
from monai.bundle import ConfigParser, ConfigWorkflow
from sample_crop import CROP_FLAGS, write_sample_crop

CONVENTION_FLAGS = ("--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - \S+ - INFO - ", re.MULTILINE)  # logging.conf's format
FAST = ROOT / "configs" / "inference_fast.yaml"
EVALUATE_FILES = "['configs/train.json','configs/evaluate.json']"  # evaluate.json overrides train.json
TINY_FLAGS = ("--features", "[4,8,8,8,8]", "--patch_size", "[64,64]", "--samples_per_section", "2", "--batch_size", "2")
needs_model = pytest.mark.skipif(not (ROOT / "models" / "model.pt").is_file(), reason="no shipped models/model.pt")


def monai_run(config: str, *flags: str):
    """``python -m monai.bundle run --config_file <config> --meta_file ... --logging_file ... <flags>``."""
    return run_cli("-m", "monai.bundle", "run", "--config_file", config, *CONVENTION_FLAGS, *flags)


@needs_model
def test_inference_through_monai_run_with_meta_and_logging_files(tmp_path: Path) -> None:
    data = write_sample_crop(tmp_path / "data")
    result = monai_run("configs/inference.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "out"),
                       *CROP_FLAGS)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert LOG_LINE.search(result.stdout)
    assert tifffile.imread(tmp_path / "out" / "em-crop_prob.tif").shape == (2, 128, 160)


def test_train_then_evaluate_through_monai_run(labelled_dir: Path, tmp_path: Path) -> None:
    """train.json and evaluate.json with tiny overrides, as a user runs them (one epoch of a width-4 FusionNet)."""
    result = monai_run(
        "configs/train.json", "--dataset_dir", str(labelled_dir), "--output_dir", str(tmp_path / "train"),
        "--model_dir", str(tmp_path / "train"), "--epochs", "1", "--val_interval", "1", *TINY_FLAGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert LOG_LINE.search(result.stdout) and (tmp_path / "train" / "model.pt").is_file()
    evaluate = ("--dataset_dir", str(labelled_dir), "--output_dir", str(tmp_path / "eval"), "--ckpt_path",
                str(tmp_path / "train" / "model.pt"), "--features", "[4,8,8,8,8]", "--roi_size", "[64,64]")  # fmt: skip
    result = monai_run(EVALUATE_FILES, *evaluate, "--subset", "validation")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = dict(csv.reader((tmp_path / "eval" / "metrics.csv").open()))
    assert 0.0 <= float(rows["v_rand"]) <= 1.0
    assert (tmp_path / "eval" / "v_rand_raw.csv").is_file()  # per-section scores, for pool_scores

    # evaluate.json overrides train.json, as zoo bundles do: alone, MONAI stops while merging its validate#... keys
    result = monai_run("configs/evaluate.json", *evaluate)
    assert result.returncode != 0 and "KeyError: 'query key: validate'" in result.stderr


def test_yaml_override_merges_key_by_key_over_inference_json(tmp_path: Path) -> None:
    fast = yaml.safe_load(FAST.read_text())
    base = json.loads((ROOT / "configs" / "inference.json").read_text())
    assert fast and set(fast) <= set(base)  # it only sets existing keys
    wf = ConfigWorkflow(
        config_file=[str(ROOT / "configs" / "inference.json"), str(FAST)],
        meta_file=str(ROOT / "configs" / "metadata.json"), logging_file=False, workflow_type="infer",
        bundle_root=str(ROOT), plots=True,
    )  # fmt: skip
    for key, value in fast.items():  # the YAML wins over inference.json, a command-line override over both
        assert wf.parser[key] == (True if key == "plots" else value)
    assert wf.parser["features"] == base["features"] and wf.parser["overlap"] == base["overlap"]  # the rest stays


@needs_model
def test_yaml_config_list_on_the_command_line_equals_the_same_keys_as_flags(tmp_path: Path) -> None:
    data = write_sample_crop(tmp_path / "data")
    # zoom pixel_size: no estimate, whose borderline choices may round differently in two processes' thread counts
    result = monai_run("['configs/inference.json','configs/inference_fast.yaml']", "--dataset_dir", str(data),
                       "--output_dir", str(tmp_path / "yaml"), "--zoom", "pixel_size")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "yaml").iterdir()) == ["em-crop_prob.tif"]  # the YAML's instance_mode
    run_workflow("inference.json", dataset_dir=str(data), output_dir=str(tmp_path / "flags"), zoom="pixel_size",
                 **yaml.safe_load(FAST.read_text()))  # fmt: skip
    from_yaml, from_flags = (tifffile.imread(tmp_path / run / "em-crop_prob.tif") for run in ("yaml", "flags"))
    np.testing.assert_allclose(from_yaml, from_flags, rtol=0, atol=1e-6)  # two processes: thread counts may differ


def test_evaluation_scores_what_inference_runs() -> None:
    """evaluate.json over train.json runs the network exactly as inference.json does (width, precision, folding,
    layout, windows), so its scores describe what users get; inference is bf16 where the CPU or GPU computes it
    natively ("auto")."""
    inference = ConfigParser.load_config_files(str(ROOT / "configs" / "inference.json"))
    evaluation = ConfigParser.load_config_files(
        [str(ROOT / "configs" / name) for name in ("train.json", "evaluate.json")]
    )
    keys = ("features", "precision", "fold_batch_norm", "channels_last", "roi_size", "overlap", "tta", "sw_batch_size",
            "blend_mode", "ckpt_path")  # fmt: skip
    assert {k: evaluation[k] for k in keys} == {k: inference[k] for k in keys}
    assert inference["precision"] == "auto"
    inferer = evaluation["validate"]["inferer"]
    assert (inferer["roi_size"], inferer["mode"], inferer["tta"]) == ("@roi_size", "@blend_mode", "@tta")
    assert evaluation["validate"]["evaluator"]["network"] == "@network"


def test_inference_averages_the_eight_flips_by_default_and_the_fast_variant_runs_one_pass() -> None:
    """The paper's test-time augmentation is the default (it raised pooled five-fold V_rand by 0.006, docs/README.md
    "Test-time augmentation"); evaluation scores the same setting, and inference_fast.yaml is the one-pass job."""
    wf = ConfigWorkflow(
        config_file=[str(ROOT / "configs" / "inference.json"), str(FAST)], meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=False, workflow_type="infer", bundle_root=str(ROOT),
    )  # fmt: skip
    inference = ConfigParser.load_config_files(str(ROOT / "configs" / "inference.json"))
    assert inference["tta"] is True and inference["inferer"]["tta"] == "@tta"
    assert wf.parser.get_parsed_content("inferer").tta is False


def test_evaluate_json_is_a_short_override_of_train_json() -> None:
    """The model zoo's layout: evaluate.json sets keys of train.json (validate#...) and runs its evaluator, without
    copying train.json's network, data or transforms."""
    evaluate = json.loads((ROOT / "configs" / "evaluate.json").read_text())
    train = json.loads((ROOT / "configs" / "train.json").read_text())
    assert evaluate["run"] == ["$@validate#evaluator.run()"] and "validate#handlers" in evaluate
    assert not {"network_def", "validate", "sections", "dataset", "evaluator", "preprocessing"} & set(evaluate)
    assert all(key.split("#")[0] in train for key in evaluate if "#" in key)  # it overrides, it adds no sections


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_no_config_points_outside_the_bundle() -> None:
    """Configs travel in the release zip: no path in them may leave the bundle (../) or be absolute."""
    for path in sorted((ROOT / "configs").glob("*")):
        if path.suffix not in (".json", ".yaml", ".yml"):
            continue
        content = yaml.safe_load(path.read_text())  # JSON is YAML
        outside = [s for s in _strings(content) if "../" in s or "..\\" in s or s.startswith("/")]
        assert not outside, f"{path.name} points outside the bundle: {outside}"
