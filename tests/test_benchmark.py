# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Smoke test of `python -m bundle benchmark` at tiny sizes (no timing asserts: figures live in the benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bundle.benchmark import (
    CUDA_VARIANTS,
    INFERENCE_CONFIG,
    VARIANTS,
    count_flops,
    cuda_tf32,
    default_variant,
    format_table,
    inference_defaults,
    inference_plan,
    precision_of,
    run_benchmark,
)
from scripts.fusionnet import FusionNet

LAYOUT = "bn_folded+channels_last"  # inference.json's fold_batch_norm and channels_last


def test_flop_count_of_the_full_width_network() -> None:
    net = FusionNet().eval()
    with torch.no_grad():
        flops = count_flops(lambda: net(torch.rand(1, 1, 64, 64)))
    assert abs(flops * 64 - 829.26e9) / 829.26e9 < 0.01  # 512x512 is 64x the pixels of 64x64


def test_tiny_benchmark_reports_every_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine without native bf16 (as assumed here), TTA and the training step run in fp32."""
    import scripts.inferers

    monkeypatch.setattr(scripts.inferers, "native_bf16", lambda device: False)
    report = run_benchmark(
        sections=1, size=64, roi=32, full_width=False, variants=("fp32", "bf16", LAYOUT, LAYOUT + "+bf16"),
        train_patch=32, train_batch=2, train_steps=2, widths={"shipped": (4, 8, 8, 8, 8)}, job_sections=0,
    )  # fmt: skip
    assert report["peak_gflops"]["fp32"] > 0 and report["peak_gflops"]["bf16"] > 0
    assert {r["variant"] for r in report["inference"]} == {"fp32", LAYOUT, "fp32 +tta"}  # no emulated bf16 rows
    assert report["default_variant"] == LAYOUT
    assert report["ratios"]["bf16_speedup"] is None and report["ratios"]["default_speedup"] > 0
    assert report["machine"]["native_bf16"] is False and report["training"]["precision"] == "fp32"
    assert all(r["seconds_per_section"] > 0 and r["peak_memory_mb"] > 0 for r in report["inference"])
    assert report["ratios"]["sliding_window_flop_waste"] > 1.0
    assert set(report["training"]) == {
        "precision",
        "channels_last",
        "bare_seconds_per_step",
        "ignite_seconds_per_step",
        "overhead_pct",
    }
    assert "measured matmul peak" in format_table(report)


@pytest.mark.parametrize("native", [True, False])
def test_plan_keeps_emulated_bf16_to_one_row(native: bool) -> None:
    widths = {"shipped": (4, 8, 8, 8, 8), "full": (8, 8, 8, 8, 8)}
    plan = inference_plan(widths, VARIANTS, native, 512, 256, 0.25)
    bf16_rows = [(name, variant) for name, _, variant, _, _, _ in plan if "bf16" in variant]
    if native:
        assert {("full", "bf16"), ("full", LAYOUT + "+bf16"), ("shipped", LAYOUT + "+bf16")} <= set(bf16_rows)
    else:
        assert bf16_rows == []
    assert ("full", LAYOUT) in [(name, variant) for name, _, variant, _, _, _ in plan]
    assert plan[-1][2:] == ("bf16" if native else "fp32", 256, 0.25, True)  # TTA in the fastest precision
    assert plan[-2][2:] == ("fp32", 512, 0.0, False)  # one whole-section window


def test_benchmark_follows_inference_json(tmp_path: Path) -> None:
    """The shipped width and the default variant come from configs/inference.json, not from a copy."""
    settings = json.loads(INFERENCE_CONFIG.read_text())
    assert inference_defaults()["features"] == settings["features"]
    assert inference_defaults()["sw_batch_size"] == settings["sw_batch_size"] == "auto"  # per device, as inference
    config = tmp_path / "inference.json"
    for overrides, native, expected in [
        ({"precision": "auto"}, True, LAYOUT + "+bf16"),
        ({"precision": "auto"}, False, LAYOUT),
        ({"precision": "fp32"}, True, LAYOUT),
        ({"precision": "bf16", "fold_batch_norm": False}, False, "channels_last+bf16"),
        ({"precision": "fp32", "fold_batch_norm": False, "channels_last": False}, True, "fp32"),
    ]:
        config.write_text(json.dumps({**settings, **overrides}))
        assert default_variant(native, config) == expected and expected in VARIANTS


def test_cuda_plan_adds_tf32_and_compile_rows() -> None:
    """On a GPU the plan measures strict fp32 against TF32 and bf16 at both widths, and torch.compile of the default."""
    widths = {"shipped": (4, 8, 8, 8, 8), "full": (8, 8, 8, 8, 8)}
    plan = inference_plan(widths, CUDA_VARIANTS, True, 512, 256, 0.25, cuda=True)
    rows = {(name, variant) for name, _, variant, _, _, _ in plan}
    for width in widths:
        assert {(width, "fp32"), (width, "tf32"), (width, "bf16"), (width, LAYOUT + "+bf16")} <= rows
    assert ("shipped", LAYOUT + "+bf16+compile") in rows
    assert [precision_of(v) for v in ("fp32", "tf32", LAYOUT + "+tf32", LAYOUT + "+bf16+compile")] == [
        "fp32",
        "tf32",
        "tf32",
        "bf16",
    ]


def test_tf32_switch_is_restored() -> None:
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with cuda_tf32(not before[1]):
        assert torch.backends.cudnn.allow_tf32 is (not before[1])
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_benchmark_device_is_checked(device: str) -> None:
    """A misspelt device, or cuda where PyTorch sees no GPU, is a clear error before anything is measured."""
    from bundle.cli import benchmark
    from scripts.errors import BundleInputError

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    with pytest.raises(BundleInputError, match="--device"):
        benchmark(device=device)


def test_whole_job_row_times_inference_json_end_to_end() -> None:
    """The job row runs inference.json as a user does, writes every result, and relates the time to the peak."""
    from bundle.benchmark_job import format_job, job_benchmark

    row = job_benchmark({"fp32": 100.0, "bf16": 200.0}, True, inference_defaults()["features"], sections=2, size=64)
    assert row["stack"].startswith("generated") and row["sections"] == 2
    assert row["outputs"] == ["em-stack_cells.csv", "em-stack_morphology.png", "em-stack_overlay.png"] + [
        "em-stack_prob.tif",
        "em-stack_seg.tif",
    ]
    assert row["seconds"] > 0 and row["seconds_per_section"] == row["seconds"] / 2
    assert row["fraction_of_peak"]["bf16"] == pytest.approx(row["fraction_of_peak"]["fp32"] / 2)
    assert "whole job" in format_job(row)


def test_whole_job_variant_is_timed_with_its_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmark_job --overrides="--tta false"`` times the one-pass job, and its line says which job it timed."""
    import bundle.benchmark
    import bundle.benchmark_job
    from bundle.benchmark_job import format_job
    from bundle.cli import benchmark_job
    from scripts.errors import BundleInputError

    seen: list[list[str]] = []

    def fake_job(stack: Path, out: Path, overrides: list[str]) -> float:
        out.mkdir()
        seen.append(overrides)
        return 2.0

    monkeypatch.setattr(bundle.benchmark, "matmul_peak", lambda precision: 100.0)
    monkeypatch.setattr(bundle.benchmark_job, "run_job", fake_job)
    monkeypatch.setattr(bundle.benchmark_job, "useful_gflop_per_section", lambda features, size: 1.0)
    line = benchmark_job(sections=2, size=64, overrides="--tta false")
    assert seen == [["--tta", "false"]] and line.startswith("whole job (--tta false,")
    assert format_job({**json.loads(benchmark_job(sections=2, size=64, json=True)), "overrides": []}).startswith(
        "whole job (inference.json defaults,"
    )
    with pytest.raises(BundleInputError, match="join it with ="):
        benchmark_job(overrides=True)  # what fire passes for --overrides "--tta false"


def test_whole_job_at_another_pixel_size_reads_a_resampled_tagged_stack(tmp_path: Path) -> None:
    """``benchmark_job --pixel_size 8`` times the job on the stack resampled to 8 nm, tagged so in its file."""
    from bundle.benchmark_job import job_stack
    from scripts.io import read_pixel_size, read_stack

    path, description = job_stack(tmp_path, sections=2, size=64, pixel_size=8)
    assert read_stack(path).array.shape == (2, 32, 32) and "resampled to 8 nm" in description
    assert read_pixel_size(path).nm[1:] == (8.0, 8.0)
