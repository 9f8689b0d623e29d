# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Commands of ``python -m bundle``. Each workflow command takes MONAI-style overrides as flags,
e.g. ``python -m bundle train --dataset_dir D --features "[16,32,64,128,256]" --epochs 2``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bundle.flags import folders, override_flags
from bundle.pack import DIST_DIR, ROOT_DIR, pack
from scripts.overrides import RUN_KEYS as _RUN_KEYS  # noqa: F401 (tests/test_packaging.py reads it here)
from scripts.overrides import check_override_keys

BUNDLE_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = BUNDLE_ROOT / "configs"
SAMPLE_DIR = str(BUNDLE_ROOT / "sample")
SAMPLE_PIXEL_SIZE_NM = (50.0, 4.0, 4.0)
FIBSEM_SAMPLE_SHAPE = (32, 128, 128)
METADATA_SCHEMA = BUNDLE_ROOT / "bundle" / "metadata_schema.json"
META_FILE = str(CONFIGS / "metadata.json")


#: overrides that name files or folders: fire may have parsed them as numbers or tuples
PATH_KEYS = ("dataset_dir", "output_dir", "ckpt_path", "model_dir", "bundle_root")


def _run_workflow(config: str | list[str], overrides: dict[str, Any]) -> None:
    from monai.bundle import run
    from scripts.settings import path_setting

    for key in PATH_KEYS:
        if key in overrides:
            overrides[key] = path_setting(overrides[key], key)
    overrides.setdefault("bundle_root", str(BUNDLE_ROOT))
    files = [str(CONFIGS / name) for name in ([config] if isinstance(config, str) else config)]
    overrides.setdefault("config_file", files[0] if len(files) == 1 else files)
    overrides.setdefault("meta_file", str(CONFIGS / "metadata.json"))
    overrides.setdefault("logging_file", str(CONFIGS / "logging.conf"))
    check_override_keys(overrides["config_file"], overrides)
    run(**overrides)


def infer(**overrides: Any) -> None:
    """Segment every image in --dataset_dir (default: the shipped samples) into --output_dir (default runs/inference).

    Writes <stem>_prob.tif (membrane probability), <stem>_seg.tif (cells) and <stem>_cells.csv per image
    (--output_format h5, zarr or nii.gz for other formats; NIfTI and zarr inputs give NIfTI and OME-Zarr results).
    """
    _run_workflow("inference.json", overrides)


def train(**overrides: Any) -> None:
    """Train FusionNet on a labelled --dataset_dir (configs/train.json); the best model replaces models/model.pt.

    As in model-zoo bundles, models/model.pt (best validation V_rand) and models/model_final.pt are what inference
    and evaluation then load; --model_dir elsewhere keeps models/ as it is. Logs and full checkpoints go to
    --output_dir (default runs/train).
    """
    _run_workflow("train.json", overrides)


def finetune(**overrides: Any) -> None:
    """Fine-tune the shipped model (or --ckpt_path) on a few labelled sections in --dataset_dir.

    Runs ``['configs/train.json','configs/finetune.json']``: starts from models/model.pt at its width, holds out the
    last quarter of every labelled section (--held_out), trains on the rest for --steps (default 200) at a tenth of
    train.json's learning rate, then scores the starting and the fine-tuned model's cells on the held-out quarters.
    runs/finetune/models/model.pt is the fine-tuned model if it scores more than --min_gain (0.005 V_rand) higher,
    else the starting one (--keep finetuned: the fine-tuned one whatever it scored), model_final.pt the fine-tuned
    one, metrics.json both scores and the decision (--output_dir moves the run; --model_dir the weights); models/ is
    never written. Labels saved 1 = membrane: --label_convention mask.
    Infer with them: ``python -m bundle infer --ckpt_path runs/finetune/models/model.pt``.
    """
    _run_workflow(["train.json", "finetune.json"], overrides)


def evaluate(**overrides: Any) -> None:
    """Score a model on a labelled --dataset_dir; writes metrics.csv to --output_dir (default runs/evaluate).

    evaluate.json overrides train.json, so this runs ``['configs/train.json','configs/evaluate.json']``; a
    --config_file of your own (e.g. with configs/basicunet.json) replaces that list.
    """
    _run_workflow(["train.json", "evaluate.json"], overrides)


def make_sample(output_dir: str = SAMPLE_DIR, sections: int = 6, size: int = 256, seed: int = 2026) -> str:
    """Write the synthetic EM samples that inference segments by default, each with its labels: em-volume.tif (ssTEM,
    tagged 50 x 4 x 4 nm; membranes 5 px, 20 nm wide, a quarter of the pixels as in ISBI 2012 (0.229): with 3 px
    (12 nm, 0.15) the 0.12.0 model's image check read the sample as another scale (zoom 0.917)) and fibsem-volume.tif
    (FIB-SEM, 32 x 128 x 128 voxels tagged 10 nm: three planes and 3D neurons)."""
    from scripts.io import PixelSize, write_tiff
    from scripts.synthetic import make_em_stack

    samples = {
        "em": (make_em_stack((sections, size, size), seed=seed, membrane_width=5), SAMPLE_PIXEL_SIZE_NM),
        "fibsem": (make_em_stack(FIBSEM_SAMPLE_SHAPE, cell_size=24, seed=seed, isotropic=True), (10.0, 10.0, 10.0)),
    }
    for name, ((image, label), nm) in samples.items():
        pixel_size = PixelSize(nm, "the synthetic sample's")
        write_tiff(Path(output_dir) / f"{name}-volume.tif", image, pixel_size)
        write_tiff(Path(output_dir) / f"{name}-labels.tif", label, pixel_size)
    return str(output_dir)


def figure(
    output: str = "docs/isbi2012_example.png", section: int = 0, y: int = 128, x: int = 128, size: int = 256
) -> str:
    """The model card's picture: a crop of an ISBI 2012 training section (../shared/data), segmented by the shipped
    model in one pass (python -m bundle infer --tta false), beside its membrane map and cells, as a small PNG."""
    from bundle.figure import make_figure

    return make_figure(output, section=section, y=y, x=x, size=size)


def make_datalist(image: str, label: str, output: str = "runs/datalist.json") -> str:
    """Write a MONAI datalist JSON pairing image stacks with label stacks whose names do not pair themselves, for
    ``--dataset_dir``: e.g. ``python -m bundle make_datalist --image ../shared/data/fibsem_medulla/volume.tif
    --label ../shared/data/fibsem_medulla/neuron-labels.tif --output runs/fibsem.json`` (comma-separated lists for
    several pairs; paths are stored relative to the JSON file)."""
    from scripts.data import write_datalist

    write_datalist(image, label, output)
    return str(output)


def verify() -> str:
    """Check configs/metadata.json against the project's schema and the network's input/output shapes."""
    from monai.bundle import verify_metadata, verify_net_in_out

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(METADATA_SCHEMA))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        n=2,
        bundle_root=str(BUNDLE_ROOT),
    )
    return "metadata and network input/output verified"


def metadata_requirements(meta_file: str = META_FILE, output: str | None = None) -> str:
    """The pip requirements that configs/metadata.json declares, one per line, as the MONAI model zoo's
    ci/get_bundle_requirements.py makes them: monai_version, pytorch_version (torch), numpy_version, then
    optional_packages_version and required_packages_version ("==" unless the version starts with <, > or =).
    Printed, and written to --output if given; e.g. ``pip install -r <(python -m bundle metadata_requirements)``."""
    import json

    from scripts.errors import BundleInputError

    try:
        meta = json.loads(Path(meta_file).read_text())
    except (OSError, ValueError) as e:
        raise BundleInputError(
            meta_file, f"cannot be read as JSON ({e})", "pass --meta_file configs/metadata.json"
        ) from None
    lines = []
    for key, package in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        if key in meta:
            lines.append(f"{package}=={meta[key]}")
    for key in ("optional_packages_version", "required_packages_version"):
        for package, version in meta.get(key, {}).items():
            version = str(version).strip()
            lines.append(f"{package}{version}" if version[:1] in ("<", ">", "=") else f"{package}=={version}")
    text = "\n".join(lines)
    if output:
        Path(output).write_text(text + "\n")
    return text


def score_instances(seg: str, labels: str, z_start: int = 0, z_stop: int | None = None) -> dict:
    """V_rand/V_info of an instance segmentation (e.g. <stem>_seg.tif from --instance_mode 3d) against label stacks,
    over sections z_start:z_stop (e.g. a held-out sub-cube)."""
    from scripts.evaluation import score_instance_files

    return score_instance_files(seg, labels, z_start, z_stop)


def pool_scores(*evaluations: str) -> dict:
    """V_rand, V_info and Dice over the sections of several evaluate.json output folders taken together, e.g. the
    held-out folds of a cross-validation: ``python -m bundle pool_scores 'runs/cv/fusionnet_fold*'``."""
    from scripts.evaluation import pooled_scores

    return pooled_scores(folders(evaluations))


def compare_scores(evaluations: str, baseline: str, resamples: int = 2000, seed: int = 0) -> dict:
    """Pooled scores of one model's evaluations against a baseline's on the same sections, with a paired bootstrap
    over sections (95% interval of each difference, share of draws won): e.g.
    ``python -m bundle compare_scores 'runs/cv/fusionnet_fold*' 'runs/cv/basicunet_fold*'``."""
    from scripts.evaluation import compare_pooled

    return compare_pooled(folders(evaluations), folders(baseline), resamples=int(resamples), seed=int(seed))


def cross_validate(
    output: str,
    dataset_dir: str = "../shared/data/isbi2012",
    folds: int = 5,
    parallel: int = 1,
    config_file: str = "configs/train.json",
    overrides: str = "",
    final: bool = False,
    baseline: str | None = None,
    seed: int = 0,
) -> dict:
    """A recipe's k-fold cross-validation in one command: each fold trains on all but one contiguous block of
    sections (final checkpoint) and is scored on it, then the held-out sections are pooled; e.g.
    ``python -m bundle cross_validate runs/cv/ctx1 --overrides="--context_sections 1"`` (with =). ``--config_file`` is
    train.json then the recipe's override files (comma-separated); ``--overrides`` the recipe's flags, given to
    training and evaluation alike; ``--parallel`` folds at once (1 or 2 on a CPU, sharing its cores; 5 on one GPU);
    ``--final true`` also trains on every section (``<output>/final/model_final.pt``) for as many steps as a fold;
    ``--baseline 'runs/cv/b0/eval*'`` adds a paired bootstrap against another recipe's evaluations. A rerun skips
    the folds already scored."""
    from bundle.cross_validation import cross_validate as run
    from scripts.errors import as_bool

    return run(output, dataset_dir, folds, parallel, config_file, overrides, as_bool(final, "final"), baseline, seed)


def benchmark(
    json: bool = False,
    sections: int = 2,
    size: int = 512,
    roi: int = 256,
    full_width: bool = True,
    tiny: bool = False,
    device: str = "cpu",
) -> str:
    """Inference and training speed against this machine's measured matmul peak (table, or JSON with --json).

    Rows: shipped and full width; fp32, bf16, channels_last, batch-norm folding, their combination (the inference
    default), torch.compile; one 512 window vs sliding windows; TTA; Ignite trainer vs a bare loop. --tiny runs a
    seconds-long smoke version. --device cuda measures the GPU instead (adds TF32 rows; use more --sections).
    """
    import json as json_module

    import torch
    from bundle.benchmark import default_variant, format_table, run_benchmark, with_bf16
    from scripts.errors import BundleInputError, as_bool

    if device not in ("cpu", "cuda"):
        raise BundleInputError("--device", f"must be cpu or cuda, got {device!r}", "pass --device cpu or --device cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BundleInputError("--device cuda", "no CUDA GPU is visible to PyTorch", "run without --device (CPU)")
    options: dict = dict(
        sections=sections, size=size, roi=roi, full_width=as_bool(full_width, "full_width"), device=device
    )
    if as_bool(tiny, "tiny"):
        layout = default_variant(False)  # inference.json's layout, so the tiny run also has the default's rows
        options = dict(sections=1, size=64, roi=32, full_width=False, train_patch=32, train_batch=2, train_steps=2,
                       widths={"shipped": (4, 8, 8, 8, 8)}, variants=("fp32", "bf16", layout, with_bf16(layout)),
                       device=device, job_sections=2)  # fmt: skip
    report = run_benchmark(**options)
    return json_module.dumps(report, indent=2) if as_bool(json, "json") else format_table(report)


def benchmark_job(
    sections: int = 30, size: int = 512, overrides: str = "", json: bool = False, pixel_size: float = 0.0
) -> str:
    """The whole inference job alone (the last row of ``benchmark``): inference.json's defaults in a fresh process
    on the 30-section ISBI test stack (a generated one of ``sections`` x ``size`` x ``size`` where it is absent),
    as seconds per section and useful network GFLOP/s against the measured matmul peak. ``--overrides`` times a
    variant, e.g. ``--overrides="--tta false"`` (with =); ``--pixel_size 8`` resamples the 4 nm stack to 8 nm and
    tags it so (what resampling to the model's scale and back costs)."""
    import json as json_module

    import torch
    from bundle.benchmark import inference_defaults, matmul_peak
    from bundle.benchmark_job import format_job, job_benchmark
    from scripts.errors import as_bool
    from scripts.inferers import native_bf16
    from scripts.settings import integer, real

    native = native_bf16(torch.device("cpu"))
    peaks = {p: matmul_peak(p) for p in (("fp32", "bf16") if native else ("fp32",))}
    features = inference_defaults()["features"]
    flags = override_flags(overrides, "--tta false")
    nm = real(pixel_size, "pixel_size", 8, positive=False)
    row = job_benchmark(peaks, native, features, integer(sections, "sections", 1, 30), integer(size, "size", 16, 512),
                        flags, nm)  # fmt: skip
    row["peak_gflops"] = peaks
    return json_module.dumps(row, indent=2) if as_bool(json, "json") else format_job(row)


def benchmark_scoring(sections: int = 10, size: int = 512) -> dict:
    """Time ISBI V_rand/V_info scoring of `sections` sections of size x size at the 11 thresholds."""
    from scripts.isbi_metrics import benchmark_isbi_scoring

    return benchmark_isbi_scoring(n_slices=sections, size=size)


def benchmark_streaming(sections: int = 20, size: int = 1024, isotropic: bool = False, json: bool = False) -> str:
    """Peak memory of streamed (configs/inference_stream.json) vs whole-volume inference on a generated stack
    (--isotropic true: tagged 4 nm in z too, so both run three planes)."""
    import json as json_module

    from bundle.benchmark_streaming import format_streaming, run_streaming_benchmark
    from scripts.errors import as_bool

    report = run_streaming_benchmark(sections=int(sections), size=int(size), isotropic=as_bool(isotropic, "isotropic"))
    return json_module.dumps(report, indent=2) if as_bool(json, "json") else format_streaming(report)


def benchmark_dask(
    sections: int = 1200, size: int = 512, memory_limit: str = "1.2GB", dtype: str = "float32", json: bool = False
) -> str:
    """Blockwise inference (configs/inference_dask.json) of a generated zarr volume larger than a worker's memory
    limit, on LocalClusters of 1 and 2 workers: seconds, peak memory per worker and the scaling efficiency."""
    import json as json_module

    from bundle.benchmark_dask import format_dask, run_dask_benchmark
    from scripts.errors import as_bool
    from scripts.settings import choice, integer

    report = run_dask_benchmark(
        integer(sections, "sections", 1, 100000),
        integer(size, "size", 16, 4096),
        memory_limit=str(memory_limit),
        dtype=choice(dtype, "dtype", ("uint8", "float32")),
    )
    return json_module.dumps(report, indent=2) if as_bool(json, "json") else format_dask(report)


def scale_check(
    sections: str = "0,5,10,15", pixel_sizes: str = "2,3,4,6,8,12", fibsem: str = "200,230", tta: bool = False
) -> str:
    """The shipped model on ISBI sections resampled to other pixel sizes and on FIB-SEM sections, with the pixel size
    known, unknown (zoom auto) and ignored (zoom 1): a markdown table of V_rand / V_info (needs ../shared/data)."""
    from bundle.scale_check import format_scale_check, run_scale_check
    from scripts.errors import as_bool

    numbers = [
        [float(v) for v in (text if isinstance(text, (list, tuple)) else str(text).split(",")) if str(v).strip()]
        for text in (sections, pixel_sizes, fibsem)  # fire gives "1,2" as a tuple
    ]
    rows = run_scale_check(
        tuple(int(s) for s in numbers[0]),
        tuple(numbers[1]),
        tuple(int(z) for z in numbers[2]) if numbers[2] else (),
        as_bool(tta, "tta"),
    )
    return format_scale_check(rows)


def benchmark_neurons(prob: str | None = None, sides: str = "125,250") -> list[dict]:
    """Time and peak memory of 3D neurons (seeds, watershed, agglomeration, table) from a membrane map: --prob a
    _prob file (e.g. the FIB-SEM cube's), else synthetic cubes of each side in --sides; one fresh process each."""
    from bundle.benchmark_neurons import run_neurons_benchmark

    values = sides if isinstance(sides, (list, tuple)) else str(sides).split(",")  # fire gives "1,2" as a tuple
    return run_neurons_benchmark(None if prob is None else str(prob), tuple(int(v) for v in values))


def fibsem_mix(output: str = "runs/mix/data", boundary_dilations: int = 0, isbi_repeat: int = 35,
               isbi_sections: int = 20) -> str:  # fmt: skip
    """Write the two-modality training set (ISBI 2012 and the FIB-SEM cube's z < 200 in three planes) the shipped
    model learned from; returns its datalist for --dataset_dir (needs ../shared/data)."""
    from bundle.fibsem_mix import write_mix

    return write_mix(output, int(boundary_dilations), int(isbi_repeat), int(isbi_sections))


def fibsem_check(prob: str, seg: str | None = None, z_start: int = 200, **settings: Any) -> dict:
    """Scores of a _prob map (and _seg neurons) of FIB-SEM cube sections z_start...: the map per xy section and the
    3D neurons (needs ../shared/data); settings (seeds, seed_threshold, seed_distance, min_seed_size,
    agglomeration) segment neurons from the map where no --seg is given."""
    from bundle.fibsem_check import fibsem_check as check

    return check(str(prob), None if seg is None else str(seg), int(z_start), **settings)


def fibsem_target_ceiling(boundary_dilations: int = 0, z_start: int = 200, z_stop: int = 250) -> dict:
    """3D neuron scores that a perfect network trained on FIB-SEM membranes grown by --boundary_dilations would give
    on sections z_start...z_stop - 1: their ground truth's own target, segmented as inference does (needs
    ../shared/data)."""
    from bundle.fibsem_check import target_ceiling

    return target_ceiling(int(boundary_dilations), int(z_start), int(z_stop))


def release(
    output_dir: str = DIST_DIR,
    source: str | None = None,
    bundle_root: str = ROOT_DIR,
    progress: bool = True,
    tracked_only: bool = True,
    bioimageio: bool = True,
) -> dict[str, Any]:
    """The model-zoo release zip, its .sha256 and model_info.json (``bundle.pack.pack``, whose arguments these are)
    and, beside them, the bioimage.io package of the same weights (--bioimageio false: without it)."""
    from scripts.errors import as_bool

    result = pack(output_dir, source, bundle_root, progress, tracked_only)
    if as_bool(bioimageio, "bioimageio"):
        result["bioimageio"] = export_bioimageio(output_dir, str(Path(bundle_root) / "models" / "model.pt"))
    return result


def export_bioimageio(output_dir: str = DIST_DIR, ckpt_path: str | None = None) -> str:
    """Write the model (models/model.pt, or --ckpt_path with the pixel size of its model.json) as a bioimage.io
    package for ilastik, Fiji (deepImageJ) and QuPath: <output_dir>/<bundle_name>_v<version>_bioimageio.zip."""
    from bundle.bioimageio import export_bioimageio as export

    return export(str(output_dir), None if ckpt_path is None else str(ckpt_path))


COMMANDS = {
    "infer": infer,
    "train": train,
    "finetune": finetune,
    "evaluate": evaluate,
    "score_instances": score_instances,
    "pool_scores": pool_scores,
    "compare_scores": compare_scores,
    "cross_validate": cross_validate,
    "benchmark": benchmark,
    "benchmark_job": benchmark_job,
    "benchmark_scoring": benchmark_scoring,
    "benchmark_streaming": benchmark_streaming,
    "benchmark_dask": benchmark_dask,
    "scale_check": scale_check,
    "benchmark_neurons": benchmark_neurons,
    "fibsem_mix": fibsem_mix,
    "fibsem_check": fibsem_check,
    "fibsem_target_ceiling": fibsem_target_ceiling,
    "export_bioimageio": export_bioimageio,
    "make_sample": make_sample,
    "make_datalist": make_datalist,
    "figure": figure,
    "verify": verify,
    "metadata_requirements": metadata_requirements,
    "pack": release,
}
