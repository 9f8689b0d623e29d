# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle pack`` makes a model-zoo release that ``monai.bundle download``, ``load`` and ``run`` use."""

from __future__ import annotations

import ast
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from bundle.pack import file_digest, pack
from conftest import ROOT, run_cli, run_workflow
from sample_crop import CROP_FLAGS, CROP_OVERRIDES, write_sample_crop
from scripts.checkpoint import checkpoint_features
from scripts.errors import BundleInputError

META = json.loads((ROOT / "configs" / "metadata.json").read_text())
NAME, VERSION = META["bundle_name"], META["version"]
FEATURES = json.loads((ROOT / "configs" / "inference.json").read_text())["features"]
RELEASE = f"{NAME}_v{VERSION}"
needs_model = pytest.mark.skipif(not (ROOT / "models" / "model.pt").is_file(), reason="no shipped models/model.pt")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) for the duration of the block; yield the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def copy_bundle(target: Path, with_model: bool = True) -> Path:
    """A copy of the bundle's packed folders (no git, tests, runs); models/model.pt only if ``with_model``."""
    for folder in ("configs", "docs", "sample", "scripts"):
        shutil.copytree(ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "LICENSE", target / "LICENSE")
    shutil.copy(ROOT / "large_files.yml", target / "large_files.yml")
    (target / "models").mkdir()
    if with_model:
        shutil.copy(ROOT / "models" / "model.pt", target / "models" / "model.pt")
    return target


@needs_model
def test_pack_writes_a_zoo_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = pack(output_dir=str(tmp_path / "dist"), progress=True)
    zip_path = tmp_path / "dist" / f"{RELEASE}.zip"
    assert result["zip"] == str(zip_path) and result["bundle_name"] == NAME and result["version"] == VERSION
    assert "100%" in capsys.readouterr().err  # the tqdm bar
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert archive.read(f"{NAME}/models/model.pt") == (ROOT / "models" / "model.pt").read_bytes()
        assert json.loads(archive.read(f"{NAME}/configs/metadata.json")) == META
    assert {n.split("/")[0] for n in names} == {NAME}
    for required in ("configs/inference.json", "configs/logging.conf", "scripts/fusionnet.py", "scripts/__init__.py",
                     "docs/README.md", "docs/experiments.md", "docs/isbi2012_example.png", "docs/data_license.txt",
                     "LICENSE", "sample/em-volume.tif",
                     "large_files.yml"):  # fmt: skip
        assert f"{NAME}/{required}" in names
    top_level = ("configs", "models", "scripts", "docs", "sample", "LICENSE", "large_files.yml")
    assert not [n for n in names if n.split("/")[1] not in top_level]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".part"))]

    sha256 = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert (tmp_path / "dist" / f"{RELEASE}.zip.sha256").read_text() == f"{sha256}  {RELEASE}.zip\n"
    if shutil.which("sha256sum"):  # the file names the zip as it lies beside it: sha256sum -c checks it from there
        check = subprocess.run(["sha256sum", "-c", f"{RELEASE}.zip.sha256"], cwd=tmp_path / "dist",
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert check.returncode == 0 and check.stdout.strip() == f"{RELEASE}.zip: OK", check.stdout + check.stderr
    info = json.loads((tmp_path / "dist" / "model_info.json").read_text())
    assert info == {RELEASE: {"checksum": hashlib.sha1(zip_path.read_bytes()).hexdigest(), "source": zip_path.as_uri()}}
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(
        [f"{RELEASE}.zip", f"{RELEASE}.zip.sha256", "model_info.json"]
    )  # no temporary files left

    # Packing again gives the same bytes; a source ending in "/" is a release folder the zip's name is appended to.
    other = {"other_bundle_v1.0.0": {"checksum": "x", "source": "y"}}
    (tmp_path / "dist" / "model_info.json").write_text(json.dumps(other))
    again = pack(output_dir=str(tmp_path / "dist"), source="https://example.org/releases/", progress=False)
    assert again["sha256"] == sha256
    info = json.loads((tmp_path / "dist" / "model_info.json").read_text())
    assert info[RELEASE]["source"] == f"https://example.org/releases/{RELEASE}.zip" and "other_bundle_v1.0.0" in info


@needs_model
def test_pack_leaves_out_caches_and_files_git_does_not_track(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "bundle")
    junk = ["scripts/__pycache__/io.cpython-311.pyc", "configs/.model.json.x.part", "scripts/old.pyc"]
    for path in [*junk, "tests/test_x.py", "runs/train/model.pt", "dist/old.zip", "configs/local_datalist.json"]:
        (bundle / path).parent.mkdir(parents=True, exist_ok=True)
        (bundle / path).write_text("x")
    names = zipfile.ZipFile(pack(str(tmp_path / "d1"), bundle_root=str(bundle), progress=False)["zip"]).namelist()
    assert f"{NAME}/configs/local_datalist.json" in names  # not a git checkout: every file of the packed folders
    assert not [n for n in names if n.split("/", 1)[1] in junk or n.split("/")[1] in ("tests", "runs", "dist")]

    subprocess.run(["git", "init", "-q"], cwd=bundle, check=True)
    subprocess.run(["git", "add", "LICENSE", "configs/inference.json", "configs/metadata.json", "scripts", "docs"],
                   cwd=bundle, check=True)  # fmt: skip
    names = zipfile.ZipFile(pack(str(tmp_path / "d2"), bundle_root=str(bundle), progress=False)["zip"]).namelist()
    assert f"{NAME}/configs/local_datalist.json" not in names and f"{NAME}/sample/em-volume.tif" not in names
    assert f"{NAME}/models/model.pt" in names and f"{NAME}/scripts/fusionnet.py" in names


@needs_model
def test_large_files_yml_lists_the_shipped_weights_with_their_hash(tmp_path: Path) -> None:
    """The zoo's large_files.yml: models/model.pt with the sha256 of the committed file, so changed weights without
    an updated hash_val fail here; MONAI's download_large_files accepts the file as it is, without the network."""
    entries = yaml.safe_load((ROOT / "large_files.yml").read_text())["large_files"]
    assert [e["path"] for e in entries] == ["models/model.pt"]
    entry = entries[0]
    assert entry["hash_type"] == "sha256"
    actual = file_digest(ROOT / "models" / "model.pt", "sha256")
    assert entry["hash_val"] == actual, f"models/model.pt changed: set hash_val: {actual} in large_files.yml"
    assert re.fullmatch(r"https://github\.com/[^/]+/[^/]+/releases/download/v\d+\.\d+\.\d+/model\.pt", entry["url"])
    from monai.bundle import download_large_files

    download_large_files(bundle_path=str(ROOT))  # present with the listed hash: nothing is downloaded
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    shutil.copy(ROOT / "large_files.yml", bundle / "large_files.yml")
    (bundle / "models" / "model.pt").write_bytes(b"other weights")
    with pytest.raises(Exception, match="hash check of existing file failed"):
        download_large_files(bundle_path=str(bundle))


def test_pack_stops_with_a_fix_for_a_missing_or_bad_model_and_a_bad_name(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "bundle", with_model=False)
    with pytest.raises(BundleInputError, match=r"models/model\.pt: required in a release but missing.*train one"):
        pack(str(tmp_path / "dist"), bundle_root=str(bundle), progress=False)
    (bundle / "models" / "model.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BundleInputError, match=r"model\.pt: is not a readable PyTorch checkpoint"):
        pack(str(tmp_path / "dist"), bundle_root=str(bundle), progress=False)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for bad in ("FusionNet EM membrane segmentation", "fusionnet_vnc", None):
        meta["bundle_name"] = bad
        (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(BundleInputError, match='"bundle_name" must be words joined by "_".*Fix: add e.g.'):
            pack(str(tmp_path / "dist"), bundle_root=str(bundle), progress=False)
    assert not (tmp_path / "dist").exists()


def test_bundle_pack_command_reports_a_missing_model_in_one_line(tmp_path: Path) -> None:
    bundle = copy_bundle(tmp_path / "bundle", with_model=False)
    result = run_cli("-m", "bundle", "pack", "--bundle_root", str(bundle), "--output_dir", str(tmp_path / "dist"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (
            f"error: {bundle}/models/model.pt: required in a release but missing. Fix: restore it "
            "(git checkout -- models/model.pt) or train one with configs/train.json, which writes models/model.pt"
        )
    ]


@needs_model
def test_release_downloads_loads_and_infers_like_the_working_tree(tmp_path: Path) -> None:
    """The zoo round trip: pack, serve over HTTP, ``monai.bundle download``, then ``load`` and ``run`` the copy."""
    pack(str(tmp_path / "dist"), progress=False)
    with serve(tmp_path / "dist") as url:
        result = run_cli(
            "-m", "monai.bundle", "download", "--name", NAME, "--url", f"{url}/{RELEASE}.zip",
            "--bundle_dir", str(tmp_path / "bundles"), "--progress", "false",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    downloaded = tmp_path / "bundles" / NAME
    assert (downloaded / "configs" / "inference.json").is_file() and not (downloaded / "tests").exists()

    # monai.bundle.load builds network_def from the downloaded inference.json and loads models/model.pt into it.
    from monai.bundle import load

    network = load(name=NAME, bundle_dir=str(tmp_path / "bundles"), workflow_type="inference", device="cpu")
    shipped = torch.load(ROOT / "models" / "model.pt", weights_only=True)
    assert type(network).__name__ == "FusionNet" and list(network.features) == FEATURES
    assert all(torch.equal(network.state_dict()[k], shipped[k]) for k in shipped)

    # The downloaded copy runs on its own (cwd = the copy, so its scripts/ is imported) and matches the working tree.
    data = write_sample_crop(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FUSIONNET_TRACEBACK")}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
         "--bundle_root", str(downloaded), "--dataset_dir", str(data), "--output_dir", str(tmp_path / "out_zoo"),
         *CROP_FLAGS],
        cwd=downloaded, capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_workflow("inference.json", dataset_dir=str(data), output_dir=str(tmp_path / "out_tree"), **CROP_OVERRIDES)
    zoo, tree = (tifffile.imread(tmp_path / out / "em-crop_prob.tif") for out in ("out_zoo", "out_tree"))
    assert zoo.shape == (2, 128, 160) and zoo.std() > 0.05
    # two processes: the same computation, but PyTorch's thread count may differ (earlier tests set it), so the last
    # float bit may too
    np.testing.assert_allclose(zoo, tree, rtol=0, atol=1e-6)


# the docs that travel in the release zip, whose commands are checked: the model card and the research record
DOCS = ("docs/README.md", "docs/experiments.md")
CARD_LINES = 300  # the model zoo's cards are 150-265 lines
# the model zoo's docs/readme_template.md order (Training configuration, Input, Output as in zoo cards)
CARD_HEADINGS = ("Authors", "Tags", "Model Description", "Data", "Preprocessing", "Training configuration", "Input",
                 "Output", "Performance", "MONAI Bundle Commands", "System Configuration", "Limitations",
                 "References", "License")  # fmt: skip
# what a command needs from the repository that the release zip lacks
REPOSITORY_ONLY = re.compile(r"python -m bundle\b(?!\.)|\bbundle/|requirements[\w-]*\.txt|\.venv/|\bdist\b")


def _commands(markdown: str) -> list[str]:
    """The commands in ``markdown``'s shell code blocks (```bash, or no language), continuation lines joined; comment
    lines left out. Other blocks (```python snippets) are not commands."""
    commands, current, in_block, in_other = [], "", False, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            opening = not (in_block or in_other)
            is_shell = line.strip("`").strip() in ("", "bash", "sh")
            in_block, in_other = (is_shell, not is_shell) if opening else (False, False)
            continue
        if not in_block or (not current and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        current += line.rstrip("\\") + " "
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


@pytest.mark.parametrize("name", DOCS)
def test_docs_mark_the_commands_that_need_the_repository(name: str) -> None:
    """The docs travel in the release zip: a command that needs the repository (python -m bundle, bundle/, the
    requirements files, .venv, dist/) says "# repository only"; a release example has this version."""
    docs = (ROOT / name).read_text()
    commands = _commands(docs)
    assert len(commands) > 25
    unmarked = [c for c in commands if REPOSITORY_ONLY.search(c.split("#")[0]) and "# repository only" not in c]
    assert not unmarked, f"mark these in {name} with '# repository only':\n" + "\n".join(unmarked)
    assert "configs/evaluate.json --" not in docs  # evaluate.json alone is not a workflow: it overrides train.json
    versions = set(re.findall(rf"{NAME}_v(\d+\.\d+\.\d+)", docs)) | set(
        re.findall(r"releases/download/v([\d.]+\d)/", docs)
    )
    assert versions == {VERSION}, f"{name}'s release example names {versions}, metadata.json {VERSION}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_model_card_is_zoo_sized_in_template_order_and_links_the_research_record() -> None:
    """docs/README.md is a model card of at most CARD_LINES lines with the zoo template's headings in order; its links
    into docs/experiments.md name headings that exist there, and its picture is in docs/ and small."""
    card = (ROOT / "docs" / "README.md").read_text()
    assert len(card.splitlines()) <= CARD_LINES
    headings = [re.sub(r"\*\*", "", h).strip() for h in re.findall(r"^#{2,4} (.+)$", card, flags=re.MULTILINE)]
    positions = [headings.index(h) if h in headings else -1 for h in CARD_HEADINGS]
    assert -1 not in positions, f"missing headings: {[h for h, p in zip(CARD_HEADINGS, positions) if p < 0]}"
    assert positions == sorted(positions), f"headings out of the template's order: {headings}"
    record = (ROOT / "docs" / "experiments.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", record, flags=re.MULTILINE)}
    links = re.findall(r"experiments\.md#([\w-]+)", card) + re.findall(r"\]\(#([\w-]+)\)", record)
    assert len(links) > 10  # the card's links into the record, and the record's table of contents
    broken = [link for link in links if link not in anchors]
    assert not broken, f"links to no heading of docs/experiments.md: {broken}"
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card):
        assert (ROOT / "docs" / picture).is_file() and (ROOT / "docs" / picture).stat().st_size <= 150 * 1024


@needs_model
def test_training_replaces_models_model_pt_which_inference_then_loads(labelled_dir: Path, tmp_path: Path) -> None:
    """The model zoo's train-then-infer, in a copy of the bundle: train.json writes models/model.pt, inference.json's
    checkpointloader loads it with no --ckpt_path; download_large_files brings the shipped weights back."""
    bundle = copy_bundle(tmp_path / "bundle")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FUSIONNET_TRACEBACK")}

    def monai_bundle(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=bundle, capture_output=True,
                                text=True, timeout=600, env=env, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    width = "[4,4,8,8,16]"
    monai_bundle("run", "--config_file", "configs/train.json", "--dataset_dir", str(labelled_dir), "--features", width,
                 "--epochs", "1", "--val_interval", "1", "--patch_size", "[64,64]", "--samples_per_section", "2")  # fmt: skip
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["model.pt", "model_final.pt"]
    trained = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert checkpoint_features(trained) == [4, 4, 8, 8, 16]
    assert (bundle / "runs" / "train").is_dir()  # logs and full checkpoints stay in output_dir

    log = monai_bundle("run", "--config_file", "configs/inference.json", "--features", width, *CROP_FLAGS)
    assert f"Restored all variables from {os.path.join('.', 'models', 'model.pt')}" in log
    assert (bundle / "runs" / "inference" / "em-volume_prob.tif").is_file()
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), workflow_type="infer",
                        logging_file=False, bundle_root=str(bundle), features=[4, 4, 8, 8, 16], fold_batch_norm=False)  # fmt: skip
    wf.initialize()  # the weights the evaluator runs are the trained ones
    state = wf.parser.get_parsed_content("evaluator").network.state_dict()
    assert state.keys() == trained.keys() and all(torch.equal(state[k].cpu(), trained[k]) for k in trained)

    # the shipped weights come back from large_files.yml (here served from this machine instead of the release)
    (bundle / "models" / "model.pt").unlink()
    with serve(ROOT / "models") as url:
        entries = yaml.safe_load((bundle / "large_files.yml").read_text())
        entries["large_files"][0]["url"] = f"{url}/model.pt"
        (bundle / "large_files.yml").write_text(yaml.safe_dump(entries))
        monai_bundle("download_large_files", "--bundle_path", ".")
    assert (bundle / "models" / "model.pt").read_bytes() == (ROOT / "models" / "model.pt").read_bytes()


# commands of the docs that this test does not run in the unpacked release, and why
NOT_RUN = {
    "pip install": "installs packages (CI installs the requirement files)",
    "python -m monailabel.main": "sets up and starts a MONAI Label server: tests/test_monailabel.py runs one",
    "mkdir -p ~/monailabel": "part of the MONAI Label set-up (tests/test_monailabel.py copies the bundle the same way)",
    "cp -r configs models scripts docs ~/monailabel": "part of the MONAI Label set-up (tests/test_monailabel.py)",
    "curl ": "talks to a running MONAI Label server: tests/test_monailabel.py",
    "tensorboard ": "starts a web server",
    "for fold in": "a shell loop: the commands inside it are checked one by one",
    "done": "the end of a shell loop",
    "python -m monai.bundle download ": "downloads a release: test_release_downloads_loads_and_infers_like_the_working_tree"
    " does it over HTTP on this machine",
    "PYTHONPATH=bundles/": "monai.bundle.load of a downloaded release: test_release_downloads_loads_and_infers_like_the_"
    "working_tree loads it",
    "rm models/model.pt && python -m monai.bundle download_large_files": "needs the network: test_training_replaces_"
    "models_model_pt_which_inference_then_loads runs it against a server on this machine",
}
EXPORTS = ("ckpt_export", "onnx_export", "trt_export")


def _docs_commands(bundle: Path) -> list[str]:
    """The commands of the docs in the unpacked release ``bundle`` that must work there, trailing comments and shell
    variables resolved."""
    commands = [c for name in DOCS for c in _commands((bundle / name).read_text()) if "# repository only" not in c]
    commands = [re.sub(r"\s+#\s.*$", "", c).strip() for c in commands]
    return [c.replace("$k", "1").replace("$fold", "1").replace("$PWD", ".") for c in commands]


def _flags(tokens: list[str]) -> dict[str, str]:
    """``--key value`` pairs of a command line."""
    flags, i = {}, 0
    while i < len(tokens):
        if tokens[i].startswith("--"):
            flags[tokens[i][2:]] = tokens[i + 1]
            i += 2
        else:
            i += 1
    return flags


def _config_files(bundle: Path, value: str) -> list[Path]:
    """The files of a ``--config_file`` value: every one under configs/ must be in the release; others (a user's
    own override, e.g. bce.json) are left out of the check."""
    names = ast.literal_eval(value) if value.startswith("[") else [value]
    missing = [n for n in names if n.startswith("configs/") and not (bundle / n).is_file()]
    assert not missing, f"not in the release: {missing}"
    return [bundle / n for n in names if n.startswith("configs/")]


def _dry_run(bundle: Path, tokens: list[str]) -> None:
    """What ``monai.bundle run`` would use, without running it: the config files exist, every flag names a key of
    them, and every id that ``initialize`` and ``run`` reach (``@...`` references, also inside expressions) exists."""
    from bundle.cli import _RUN_KEYS, check_override_keys
    from monai.bundle import ConfigParser

    flags = _flags(tokens)
    files = _config_files(bundle, flags["config_file"])
    check_override_keys([str(f) for f in files], flags)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(bundle)
    for key, value in flags.items():
        if key not in _RUN_KEYS and key.split("#")[0] in parser:
            parser[key] = value
    for section in ("initialize", "run"):
        parser.get_parsed_content(section, lazy=False, instantiate=False, eval_expr=False)


def _dry_export(bundle: Path, tokens: list[str]) -> None:
    """``monai.bundle ckpt_export/onnx_export/trt_export``: the configs, the network id and the checkpoint exist."""
    from monai.bundle import ConfigParser

    flags = _flags(tokens)
    parser = ConfigParser()
    parser.read_config([str(f) for f in _config_files(bundle, flags["config_file"])])
    net_id = flags.get("net_id") or tokens[4]  # ckpt_export/onnx_export take it first, trt_export as --net_id
    assert net_id in parser, f"{net_id} is not an id of {flags['config_file']}"
    assert (bundle / flags["ckpt_file"]).is_file() and (bundle / flags["meta_file"]).is_file()


@needs_model
def test_every_docs_command_works_in_the_unpacked_release(tmp_path: Path) -> None:
    """The model card and the research record travel in the release zip: each of their commands (as the zip holds
    them) not marked "# repository only" is checked inside the unpacked zip. ``monai.bundle run`` commands (and
    torchrun's) are resolved without running (:func:`_dry_run`), exports are checked likewise, and the main command,
    inference, runs there for real on a crop of the sample; commands that cannot run here are in NOT_RUN with the
    reason (and the test that covers them)."""
    result = pack(output_dir=str(tmp_path / "dist"), progress=False)
    with zipfile.ZipFile(result["zip"]) as archive:
        archive.extractall(tmp_path / "release")
    bundle = tmp_path / "release" / NAME
    assert all((bundle / name).is_file() for name in DOCS)
    commands = _docs_commands(bundle)
    assert len(commands) > 30
    unchecked = []
    for command in commands:
        if any(command.startswith(prefix) for prefix in NOT_RUN):
            continue
        for part in command.split("&&"):
            tokens = shlex.split(part)
            if tokens[0] == "cd":  # into a downloaded copy of the release: the folder this test unpacked
                continue
            if tokens[:3] == ["python", "-m", "monai.bundle"] and tokens[3] == "run":
                _dry_run(bundle, tokens)
            elif tokens[0] == "torchrun" and "monai.bundle" in tokens:
                _dry_run(bundle, tokens[tokens.index("monai.bundle") + 1 :])
            elif tokens[:3] == ["python", "-m", "monai.bundle"] and tokens[3] in EXPORTS:
                _dry_export(bundle, tokens)
            else:
                unchecked.append(command)
    assert not unchecked, "add these docs commands to a check or to NOT_RUN:\n" + "\n".join(unchecked)

    # the first command of "Execute inference", as it is, plus a small input and the sample crop's cheap flags
    main = "python -m monai.bundle run --config_file configs/inference.json --dataset_dir my_stacks"
    first = next(c for c in commands if c.startswith(main))
    data = write_sample_crop(tmp_path / "data")
    tokens = [str(data) if t == "my_stacks" else t for t in shlex.split(first)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FUSIONNET_TRACEBACK")}
    run = subprocess.run([sys.executable, *tokens[1:], *CROP_FLAGS], cwd=bundle, capture_output=True, text=True,
                         timeout=600, env=env, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert tifffile.imread(bundle / "out" / "em-crop_prob.tif").shape == (2, 128, 160)
