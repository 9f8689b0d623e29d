# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""MONAI Label: the bundle served by MONAI Label's ``monaibundle`` sample app, and the pieces of it MONAI Label uses.

The server tests start a real ``monailabel start_server`` on 127.0.0.1 with a copy of this bundle as a local bundle
(``<app>/model/<bundle_name>/``), segment a 2D TIFF and a 2D PNG, save labels and train for one epoch. They skip
when ``monailabel`` is not installed (``pip install --no-deps -r requirements-monailabel.txt``; CI installs it). The
other tests check ``scripts/annotation.py`` and the config keys MONAI Label reads or overrides, without MONAI Label.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from conftest import ROOT, TINY, run_workflow
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.losses import DiceCELoss
from PIL import Image
from scripts.annotation import AnnotatedDataset, ToLabelMaskd, labels_from_mask, read_annotated
from scripts.checkpoint import load_weights
from scripts.errors import BundleInputError
from scripts.fusionnet import FusionNet
from scripts.inferers import membrane_probability
from scripts.io import read_stack
from scripts.synthetic import make_em_stack
from scripts.transforms import MakeTargetd, NormalizeSectionsd

NAME = json.loads((ROOT / "configs" / "metadata.json").read_text())["bundle_name"]
STUB = Path(__file__).resolve().parent / "monailabel_stub"  # torchvision stand-in, see its docstring
BUNDLE_PARTS = ("configs", "models", "scripts", "docs")
START_TIMEOUT, TRAIN_TIMEOUT, REQUEST_TIMEOUT = 240, 480, 120


def _monailabel_missing() -> str:
    try:
        import monailabel  # noqa: F401
    except ImportError as e:
        fix = "pip install --no-deps -r requirements-monailabel.txt"
        return f"monailabel is not importable ({type(e).__name__}: {e}); {fix}"
    return ""


MISSING = _monailabel_missing()
needs_monailabel = pytest.mark.skipif(bool(MISSING), reason=MISSING)


# ---------------------------------------------------------------------------------------------------------------
# scripts/annotation.py and the config keys MONAI Label uses (no MONAI Label needed)
# ---------------------------------------------------------------------------------------------------------------


def test_label_mask_is_thresholded_probability_in_monailabels_axis_order() -> None:
    prob = torch.rand(1, 3, 5, 7)  # (C, Z, Y, X): a stack
    stack = ToLabelMaskd("pred", threshold=0.5)({"pred": prob})["pred"]
    assert stack.shape == (7, 5, 3) and stack.dtype == np.uint8  # (X, Y, Z): MONAI Label's writer transposes back
    np.testing.assert_array_equal(stack, (prob[0].numpy() >= 0.5).astype(np.uint8).transpose(2, 1, 0))
    section = ToLabelMaskd("pred")({"pred": prob[:, :1]})["pred"]  # one section: (1, 1, Y, X) -> (X, Y)
    np.testing.assert_array_equal(section, (prob[0, 0].numpy() >= 0.5).T)
    assert ToLabelMaskd("pred")({"pred": prob[:, 0]})["pred"].shape == (7, 5)  # (C, Y, X) -> (X, Y)
    with pytest.raises(BundleInputError, match="threshold"):
        ToLabelMaskd("pred", threshold=1.5)


def test_monailabel_masks_become_the_labels_of_the_target() -> None:
    mask = np.array([[0, 1], [1, 0]], np.uint8)  # MONAI Label: 1 = membrane
    isbi = labels_from_mask(mask, "membrane", "m.png")
    np.testing.assert_array_equal(MakeTargetd("label")({"label": isbi})["label"].numpy(), mask)  # learns the mask
    np.testing.assert_array_equal(labels_from_mask(mask * 3, "foreground", "m.png"), mask)
    with pytest.raises(BundleInputError, match="m.png.*instance labels"):
        labels_from_mask(mask, "boundaries", "m.png")


def test_read_annotated_reads_tiff_png_and_slicer_nifti_labels(tmp_path: Path) -> None:
    image, isbi = make_em_stack((2, 32, 48), cell_size=12, seed=1)
    mask = (isbi == 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", image)
    tifffile.imwrite(tmp_path / "stack_label.tif", mask)
    sections = read_annotated({"image": str(tmp_path / "stack.tif"), "label": str(tmp_path / "stack_label.tif")})
    assert [s["name"] for s in sections] == ["stack.tif[0]", "stack.tif[1]"]
    for z, item in enumerate(sections):
        assert item["image"].shape == item["label"].shape == (1, 32, 48)
        np.testing.assert_array_equal(item["label"][0] == 0, mask[z] == 1)  # ISBI: 0 = membrane
    # 3D Slicer saves labels as NIfTI in (X, Y, Z) order
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0).copy(), np.eye(4)), tmp_path / "stack_label.nii.gz")
    volume = read_annotated({"image": str(tmp_path / "stack.tif"), "label": str(tmp_path / "stack_label.nii.gz")},
                            "foreground", spatial_dims=3)  # fmt: skip
    assert len(volume) == 1 and volume[0]["image"].shape == (1, 2, 32, 48)
    np.testing.assert_array_equal(volume[0]["label"][0], mask)
    Image.fromarray(image[0]).save(tmp_path / "section.png")
    Image.fromarray(mask[0] * 255).save(tmp_path / "section_label.png")  # any nonzero value is membrane
    (png,) = read_annotated({"image": str(tmp_path / "section.png"), "label": str(tmp_path / "section_label.png")})
    np.testing.assert_array_equal(png["label"][0] == 0, mask[0] == 1)
    with pytest.raises(BundleInputError, match="section_label.png: shape"):
        read_annotated({"image": str(tmp_path / "stack.tif"), "label": str(tmp_path / "section_label.png")})
    tifffile.imwrite(tmp_path / "cells_label.tif", 1 - mask)  # the cells painted instead of the membranes
    with pytest.raises(BundleInputError, match="cells_label.tif: membrane .* the labels look inverted"):
        read_annotated({"image": str(tmp_path / "stack.tif"), "label": str(tmp_path / "cells_label.tif")})


def test_annotated_dataset_reads_file_pairs_and_keeps_sections_in_memory(tmp_path: Path) -> None:
    image, isbi = make_em_stack((2, 32, 32), cell_size=12, seed=2)
    tifffile.imwrite(tmp_path / "a.tif", image)
    tifffile.imwrite(tmp_path / "a_label.tif", (isbi == 0).astype(np.uint8))
    in_memory = {"image": image[0][None], "label": isbi[0][None], "name": "x.tif[0]"}
    dataset = AnnotatedDataset([in_memory, {"image": str(tmp_path / "a.tif"), "label": str(tmp_path / "a_label.tif")}])
    assert len(dataset) == 3 and dataset[0] is in_memory
    assert [dataset[i]["name"] for i in (1, 2)] == ["a.tif[0]", "a.tif[1]"]
    assert len(AnnotatedDataset([])) == 0  # MONAI Label with nothing held out for validation


def test_inference_json_has_what_monailabels_infer_task_reads() -> None:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["bundle_root"] = str(ROOT)
    for key in ("network_def", "preprocessing", "inferer", "post_transforms", "device"):
        assert parser.get(key) is not None, key
    post = parser.get_parsed_content("post_transforms", instantiate=True)
    out = post({"pred": torch.full((1, 1, 16, 32), 0.7)})["pred"]
    assert out.shape == (32, 16) and set(np.unique(out)) == {1}
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "membrane"}
    assert len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == 2  # MONAI Label: a 2D model


def test_metadata_declares_logits_and_the_inferer_monailabel_runs_gives_probability() -> None:
    """network_def returns logits (metadata: unbounded value_range, "logits ... sigmoid" description); the inferer
    that MONAI Label runs before post_transforms turns them into the probability ToLabelMaskd thresholds at 0.5."""
    pred = json.loads((ROOT / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]
    assert pred["value_range"] == [] and "logits" in pred["description"] and "sigmoid" in pred["description"]
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser.update({"bundle_root": str(ROOT), "features": TINY, "device": "cpu", "precision": "fp32"})
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def", instantiate=True).eval()
    with torch.no_grad():
        torch.nn.init.constant_(network.head.conv.bias, 3.0)  # a confident membrane call: logit 3
        x = torch.rand(1, 1, 64, 64)
        logits = network(x)
        prob = parser.get_parsed_content("inferer", instantiate=True)(x, network)
    assert logits.min() > 1.0  # not probabilities: logits (a bias of 3 puts them near 3)
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    # the sigmoid of the logits, averaged over the 8 flips/rotations (inference.json's tta)
    torch.testing.assert_close(prob, membrane_probability(x, network, tta=True), atol=1e-5, rtol=1e-4)


def test_train_json_trains_from_monailabels_datalist_overrides(tmp_path: Path) -> None:
    """The keys BundleTrainTask sets (bundle_root, train#trainer#max_epochs, train#dataset#data,
    validate#dataset#data, device, and train#handlers with a CheckpointLoader of models/model.pt at the front: its
    ``pretrained``, on by default), at tiny width; training starts from that model, and the models land in
    <bundle_root>/models, where MONAI Label's inference task loads them."""
    image, isbi = make_em_stack((2, 64, 64), cell_size=16, seed=3)
    pairs = []
    for z in range(2):
        tifffile.imwrite(tmp_path / f"s{z}.tif", image[z])
        tifffile.imwrite(tmp_path / f"s{z}_label.tif", (isbi[z] == 0).astype(np.uint8))
        pairs.append({"image": str(tmp_path / f"s{z}.tif"), "label": str(tmp_path / f"s{z}_label.tif")})
    bundle = tmp_path / "app" / "model" / NAME
    (bundle / "models").mkdir(parents=True)
    torch.manual_seed(4)
    current = FusionNet(features=TINY).state_dict()
    torch.save(current, bundle / "models" / "model.pt")  # the model MONAI Label serves
    handlers = ConfigParser.load_config_file(str(ROOT / "configs" / "train.json"))["train"]["handlers"]
    loader = {"_target_": "CheckpointLoader", "load_path": str(bundle / "models" / "model.pt"),
              "load_dict": {"model": "$@network"}, "strict": False}  # fmt: skip  # as BundleTrainTask inserts it
    overrides = {"train#trainer#max_epochs": 2, "train#dataset#data": pairs[:1], "validate#dataset#data": pairs[1:],
                 "train#handlers": [loader, *handlers]}  # fmt: skip
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.json"), meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=False, workflow_type="train", bundle_root=str(bundle), device="cpu", features=TINY,
        patch_size=[64, 64], val_interval=1, samples_per_section=2, batch_size=1, **overrides,
    )  # fmt: skip
    wf.initialize()
    (item,) = wf.parser.get_parsed_content("train#dataset").data
    target = MakeTargetd("label")(item)["label"].numpy()[0]
    np.testing.assert_array_equal(target, isbi[0] == 0)  # it learns the saved mask (1 = membrane)
    network, first = wf.parser.get_parsed_content("network"), {}
    wf.parser.get_parsed_content("train#trainer").add_event_handler(
        Events.ITERATION_STARTED(once=1),
        lambda _: first.update({k: v.clone() for k, v in network.state_dict().items()}),
    )
    wf.run()
    for key, value in current.items():  # the first step starts from the served model
        torch.testing.assert_close(first[key], value, rtol=0, atol=0, msg=key)
    wf.finalize()
    names = sorted(p.name for p in (bundle / "models").iterdir())
    assert names == ["metrics.json", "model.json", "model.pt", "model_final.json", "model_final.pt"]
    assert (bundle / "runs" / "train").is_dir()  # logs stay in output_dir
    # the served model was scored first and is replaced only by a model that scored higher on the held-out label
    record = json.loads((bundle / "models" / "metrics.json").read_text())
    served = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    if record["kept"] == "base":
        assert record["trained"]["val_v_rand"] <= record["base"]["val_v_rand"]
        assert all(torch.equal(served[k], current[k]) for k in current)
    else:
        assert record["best_epoch"] > 0  # a validation after the first step scored higher than the served model


# ---------------------------------------------------------------------------------------------------------------
# a real MONAI Label server with the monaibundle app and this bundle
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    bundle: Path
    studies: Path
    log: Path
    masks: dict[str, np.ndarray]  # image id -> membrane mask to save as its label

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``requests.<method>(url + path)``; fails the test with the server log's tail on an HTTP error."""
        import requests

        response = requests.request(method, self.url + path, timeout=REQUEST_TIMEOUT, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}\n{self.log_tail()}"
        return response


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FUSIONNET_TRACEBACK")}
    env.update(OMP_NUM_THREADS="1", MONAI_LABEL_SESSION_PATH=str(root / "sessions"), PYTHONDONTWRITEBYTECODE="1")
    probe = subprocess.run([sys.executable, "-c", "import torchvision.utils"], env=env, capture_output=True,
                           check=False)  # fmt: skip
    if probe.returncode != 0:  # PyPI's torchvision needs a CUDA torch: use the stub (see tests/monailabel_stub)
        env["PYTHONPATH"] = str(STUB)
    return env


def _write_studies(studies: Path) -> dict[str, np.ndarray]:
    """A 2D TIFF and a 2D PNG EM section (256 x 256) to segment; returns their membrane masks (1 = membrane)."""
    image, isbi = make_em_stack((2, 256, 256), cell_size=40, seed=11)
    studies.mkdir(parents=True)
    tifffile.imwrite(studies / "em_tif.tif", image[0])
    Image.fromarray(image[1]).save(studies / "em_png.png")
    return {"em_tif": (isbi[0] == 0).astype(np.uint8), "em_png": (isbi[1] == 0).astype(np.uint8)}


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the server and any training process), SIGKILL what is left after 30 s,
    and check that none of them is still running (a zombie, which the machine's init may never reap, is gone)."""
    import psutil

    def running(procs: list[psutil.Process]) -> list[psutil.Process]:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive

    procs = []
    if process.poll() is None:
        server = psutil.Process(process.pid)
        procs = [server, *server.children(recursive=True)]
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)  # start_new_session: the group id is the server's pid
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while running(procs) and time.monotonic() < deadline:
            process.poll()  # reap the server once it exits
            time.sleep(0.2)
        if not running(procs):
            break
    process.wait(timeout=10)
    assert not running(procs), f"processes left after stopping the server: {running(procs)}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``monailabel start_server`` with the monaibundle sample app and a copy of this bundle; stopped afterwards."""
    if MISSING:
        pytest.skip(MISSING)
    root = tmp_path_factory.mktemp("monailabel")
    env = _server_env(root)
    ml = [sys.executable, "-m", "monailabel.main"]
    subprocess.run([*ml, "apps", "--download", "--name", "monaibundle", "--output", str(root)], cwd=root, env=env,
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    app = root / "monaibundle"
    bundle = app / "model" / NAME
    for part in BUNDLE_PARTS:  # a copy: training writes models/model_final.pt into the bundle MONAI Label serves
        shutil.copytree(ROOT / part, bundle / part, ignore=shutil.ignore_patterns("__pycache__"))
    masks = _write_studies(root / "studies")
    url = f"http://127.0.0.1:{_free_port()}"
    args = ["--app", str(app), "--studies", str(root / "studies"), "--conf", "models", NAME, "--conf", "zoo_source",
            "github", "--conf", "sam2", "false", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]  # fmt: skip
    log = root / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([*ml, "start_server", *args], cwd=root, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        import requests

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"the MONAI Label server exited:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no /info/ within {START_TIMEOUT} s:\n{log.read_text()[-4000:]}"
            try:
                if requests.get(f"{url}/info/", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        yield Server(url, bundle, root / "studies", log, masks)
    finally:
        _stop(process)


def _decode(response: Any, folder: Path, name: str) -> np.ndarray:
    """The label image in an /infer response (``output=image``), read with the bundle's reader as ``(Z, Y, X)``."""
    suffix = {"image/tiff": ".tif", "image/png": ".png"}[response.headers["content-type"].split(";")[0]]
    path = folder / f"{name}{suffix}"
    path.write_bytes(response.content)
    return read_stack(path).array


@needs_monailabel
def test_server_lists_the_bundle_as_a_2d_segmentation_model(server: Server) -> None:
    info = server.request("GET", "/info/").json()
    model = info["models"][NAME]
    assert model["type"] == "segmentation" and model["dimension"] == 2 and model["labels"] == {"membrane": 0}
    assert NAME in info["trainers"]
    assert set(server.request("GET", "/datastore/?output=all").json()["objects"]) == {"em_tif", "em_png"}


@needs_monailabel
def test_infer_returns_the_bundles_membrane_mask_for_tiff_and_png(server: Server, tmp_path: Path) -> None:
    run_workflow("inference.json", dataset_dir=str(server.studies), output_dir=str(tmp_path / "bundle"),
                 instance_mode="none", plots=False)  # fmt: skip  # the bundle's own pipeline, for reference
    for image in ("em_tif", "em_png"):
        response = server.request("POST", f"/infer/{NAME}?image={image}&output=image")
        assert response.headers["content-type"].startswith("image/")
        label = _decode(response, tmp_path, image)
        assert label.shape == (1, 256, 256) and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        expected = tifffile.imread(tmp_path / "bundle" / f"{image}_prob.tif") >= 0.5
        assert (label[0] == expected).mean() > 0.999  # same pixels as the bundle (threads may round differently)
        assert 0.02 < label.mean() < 0.6
    assert not (server.bundle / "runs" / "inference").exists()  # post_transforms, not the file writer, ran


def _start_losses(server: Server) -> tuple[float, float]:
    """train.json's loss (DiceCE) on the two labelled studies, in training mode as at the first step, of the shipped
    model and (the lower of two seeds) of a random FusionNet of its width."""
    images = [read_stack(next(server.studies.glob(f"{name}.*"))).array for name in server.masks]
    x = torch.as_tensor(np.concatenate([NormalizeSectionsd("image")({"image": i})["image"] for i in images]))[:, None]
    y = torch.as_tensor(np.stack(list(server.masks.values())), dtype=torch.float32)[:, None]
    features = json.loads((ROOT / "configs" / "inference.json").read_text())["features"]

    def start_loss(network: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(DiceCELoss(sigmoid=True)(network.train()(x.float()), y))

    shipped = start_loss(load_weights(FusionNet(features=features), ROOT / "models" / "model.pt"))
    random = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        random.append(start_loss(FusionNet(features=features)))
    return shipped, min(random)


@needs_monailabel
def test_labels_saved_then_one_epoch_of_training_publishes_a_model(server: Server, tmp_path: Path) -> None:
    for image, mask in server.masks.items():
        path = tmp_path / f"{image}.png"
        Image.fromarray(mask).save(path)
        with path.open("rb") as f:
            saved = server.request("PUT", f"/datastore/label?image={image}&tag=final", files={"label": f}).json()
        assert saved["image"] == image
    assert server.request("GET", "/info/").json()["datastore"]["completed"] == 2

    request = {"max_epochs": 1, "val_split": 0.5}  # MONAI Label's default: pretrained, from models/model.pt
    server.request("POST", f"/train/{NAME}", json=request)
    deadline = time.monotonic() + TRAIN_TIMEOUT
    while (task := server.request("GET", "/train/").json())["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training still running after {TRAIN_TIMEOUT} s"
        time.sleep(2)
    details = "\n".join(task.get("details", []))
    assert task["status"] == "DONE", f"{task['status']}:\n{details}\n{server.log_tail()}"
    losses = re.findall(r"train_loss: ([0-9.]+)", details)
    assert losses, f"no train_loss in the training log:\n{details[-4000:]}"
    shipped_loss, random_loss = _start_losses(server)
    assert float(losses[0]) < (shipped_loss + random_loss) / 2, (losses[0], shipped_loss, random_loss)

    shipped = torch.load(server.bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    trained = torch.load(server.bundle / "models" / "model_final.pt", map_location="cpu", weights_only=True)
    assert trained.keys() == shipped.keys()
    assert any(not torch.equal(trained[k], shipped[k]) for k in shipped if shipped[k].is_floating_point())

    params = {"params": (None, json.dumps({"model_filename": "model_final.pt"}))}  # the trained model serves
    response = server.request("POST", f"/infer/{NAME}?image=em_tif&output=image", files=params)
    label = _decode(response, tmp_path, "trained")
    assert label.shape == (1, 256, 256) and set(np.unique(label)) <= {0, 1}
    assert f"Using <User> provided model_file: {server.bundle / 'models' / 'model_final.pt'}" in server.log_tail(10**6)
