# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Progress bars of long runs (``scripts.progress``): sections (or windows, or Dask blocks) done of the total with
rate and time left, for inference.json, streaming and Dask; nothing at all where stderr is not a terminal."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_workflow
from scripts import progress
from scripts.fusionnet import FusionNet
from scripts.inferers import MembraneInferer
from scripts.io import write_tiff
from scripts.progress import Progress, bar
from scripts.streaming import StreamingSegmenter
from scripts.synthetic import make_em_stack

WIDTH = [4, 8, 8, 8, 8]


@pytest.fixture()
def terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[[], str]:
    """Bars drawn as on a terminal (pytest replaces sys.stderr in every test phase, so the check of
    :func:`scripts.progress.enabled` is what is replaced); returns a function giving what they wrote to stderr."""
    monkeypatch.setattr(progress, "enabled", lambda: True)
    return lambda: capsys.readouterr().err


def test_enabled_only_where_stderr_is_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.enabled()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress.enabled()


def _final(text: str, name: str) -> str:
    """The last state of the bar named ``name`` (tqdm redraws a line with carriage returns)."""
    states = [s for s in re.split(r"[\r\n]", text) if re.match(re.escape(name) + r":\s+\d+%", s)]
    assert states, f"no bar named {name!r} in {text!r}"
    return states[-1]


def test_bars_are_quiet_where_stderr_is_not_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert not progress.enabled()
    assert sum(bar(range(5), name="x")) == 10  # it still iterates
    reporter = Progress("y")
    reporter.start(3)
    reporter.update(3)
    reporter.close()
    write_tiff(tmp_path / "a.tif", make_em_stack((2, 32, 32), seed=1)[0])
    inferer = MembraneInferer(roi_size=[32, 32], precision="fp32")
    StreamingSegmenter(FusionNet(features=WIDTH), inferer, str(tmp_path / "out")).run([str(tmp_path / "a.tif")])
    assert capsys.readouterr().err == ""


def test_bar_shows_done_total_rate_and_time_left(terminal: Callable[[], str]) -> None:
    for _ in bar(range(4), name="stack.tif"):
        pass
    line = _final(terminal(), "stack.tif")
    assert re.search(r"4/4 \[\d\d:\d\d<\d\d:\d\d, .*section", line), line


def test_inferer_reports_sections_of_a_stack_and_windows_of_an_image(terminal: Callable[[], str]) -> None:
    network = FusionNet(features=WIDTH).eval()
    inferer = MembraneInferer(roi_size=[32, 32], sw_batch_size=1, progress=Progress("stack"))
    with torch.inference_mode():
        inferer(torch.rand(1, 1, 5, 48, 48), network)
        inferer.progress.name = "image"
        inferer(torch.rand(1, 1, 64, 64), network)  # 3 x 3 windows of 32 with overlap 0.25
    inferer.progress.close()
    text = terminal()
    assert " 5/5 " in _final(text, "stack") and "section" in _final(text, "stack")
    assert " 9/9 " in _final(text, "image") and "window" in _final(text, "image")


def test_inference_json_counts_sections_not_files(tmp_path: Path, terminal: Callable[[], str]) -> None:
    """Ignite's ProgressBar showed 0/1 for the whole of a one-stack run; the bar now counts its 3 sections."""
    model = tmp_path / "model.pt"
    torch.save(FusionNet(features=WIDTH).state_dict(), model)
    write_tiff(tmp_path / "in" / "a.tif", make_em_stack((3, 64, 64), seed=1)[0])
    run_workflow("inference.json", dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                 ckpt_path=str(model), features=WIDTH, tta=False, plots=False)  # fmt: skip
    line = _final(terminal(), "[1/1] a.tif")
    assert " 3/3 " in line and "section" in line


def test_streaming_counts_sections_of_both_passes(tmp_path: Path, terminal: Callable[[], str]) -> None:
    write_tiff(tmp_path / "a.tif", make_em_stack((4, 48, 48), seed=1)[0])
    inferer = MembraneInferer(roi_size=[32, 32], precision="fp32")
    StreamingSegmenter(FusionNet(features=WIDTH), inferer, str(tmp_path / "out")).run([str(tmp_path / "a.tif")])
    text = terminal()
    assert " 4/4 " in _final(text, "a.tif") and " 4/4 " in _final(text, "a.tif: cells")


def test_dask_counts_blocks_as_they_finish(tmp_path: Path, terminal: Callable[[], str]) -> None:
    """Blocks a resumed run finds done count from the start; the rest as the cluster finishes them."""
    from distributed import Client
    from scripts.blockwise.blocks import BlockLedger, plan_blocks
    from scripts.blockwise.volume import _run_blocks

    def double(block, ledger: BlockLedger) -> None:
        ledger.mark(block.index, int(np.prod([r.stop - r.start for r in block.region])) * 2)

    blocks = plan_blocks((4, 8, 8), (1, 8, 8))
    ledger = BlockLedger(tmp_path / "ledger", {"x": 1})
    ledger.mark(blocks[0].index, 128)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        assert _run_blocks(client, double, blocks, ledger, "v: probability") == [128] * 4
    line = _final(terminal(), "v: probability")
    assert " 4/4 " in line and "block" in line
