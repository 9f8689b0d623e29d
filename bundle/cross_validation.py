# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle cross_validate``: a recipe's k-fold cross-validation as the docs report it, in one command.

Fold ``k`` trains train.json (plus the recipe's override files and flags) on every labelled section but the k-th
contiguous block, keeps the final checkpoint (no checkpoint is picked on the sections it is scored on), and scores
it on the held-out block with evaluate.json. The held-out sections of all folds are then pooled
(``scripts.evaluation.pooled_scores``) and, given a baseline's evaluations, compared with a paired bootstrap.
``final`` also trains the recipe on every section, the run whose final checkpoint a release ships. It keeps the
folds' number of optimizer steps: one epoch on every section is folds / (folds - 1) times a fold's, so its epochs are
a fold's times (folds - 1) / folds (the recipe's schedule is in steps, not in passes over the data).

Folds run ``parallel`` at a time as separate processes, which share the machine's cores (each gets
``cpu_count // parallel`` threads unless ``OMP_NUM_THREADS`` is set): on a CPU 1 or 2 (two single-thread runs on 2
cores also fill the time one spends on augmentation), on a GPU several (one small-width training leaves most of it
idle). A fold whose evaluation is complete is not run again, and a fold killed while training goes on from its
newest full checkpoint, so a killed cross-validation resumes where it stopped (a long CPU one can span sessions).
Everything lands in ``output``: one folder per run, one log per process (``logs/``), and ``cross_validation.json``
with the commands, the seconds each run took and the pooled scores.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# flags the command sets itself for each run: a recipe must not override them
OWNED_FLAGS = (
    "--dataset_dir",
    "--output_dir",
    "--model_dir",
    "--val_fold",
    "--val_fraction",
    "--ckpt_path",
    "--subset",
)


def recipe_flags(overrides: str | Sequence[str]) -> list[str]:
    """The recipe's extra flags (a shell-quoted string or a list), refused if they set a flag this command owns."""
    from bundle.flags import override_flags
    from scripts.errors import BundleInputError

    flags = override_flags(overrides, "--epochs 128")
    for flag in flags:
        if flag.split("=")[0] in OWNED_FLAGS:
            raise BundleInputError(
                "--overrides", f"sets {flag.split('=')[0]}, which cross_validate sets for each fold", "leave it out"
            )
    return flags


def _located(name: str) -> Path:
    """A config file as the runs (started in the bundle root) find it: relative to the root first."""
    return ROOT / name if (ROOT / name).is_file() else Path(name)


def config_list(config_file: str | Sequence[str]) -> list[str]:
    """train.json and the recipe's override files, in merge order (a list, or a comma-separated string)."""
    from scripts.errors import BundleInputError

    files = [f.strip() for f in config_file.split(",")] if isinstance(config_file, str) else list(config_file)
    files = [f for f in files if f]
    if not files or Path(files[0]).name != "train.json":
        raise BundleInputError(
            "--config_file", f"must start with configs/train.json, got {files}", "list train.json first"
        )
    for name in files:
        if not _located(name).is_file():
            raise BundleInputError(name, "no such config file", "give paths relative to the bundle root")
    return files


def final_run_flags(configs: Sequence[str], flags: Sequence[str], folds: int) -> list[str]:
    """``flags`` with the epochs (the recipe's ``--epochs``, else the merged configs' ``epochs``) scaled by
    ``(folds - 1) / folds``, for the final run on every section to take as many optimizer steps as each fold."""
    from monai.bundle import ConfigParser
    from scripts.settings import integer

    flags = list(flags)
    given = [i for i, flag in enumerate(flags) if flag.split("=")[0] == "--epochs"]
    if given:
        i = given[-1]
        if "=" in flags[i]:
            value, flags = flags[i].split("=", 1)[1], flags[:i] + flags[i + 1 :]
        else:
            value, flags = flags[i + 1], flags[:i] + flags[i + 2 :]
    else:
        value = ConfigParser.load_config_files([str(_located(c)) for c in configs])["epochs"]
    epochs = integer(int(value) if str(value).strip().isdigit() else value, "epochs", 1, 120)  # a flag is text
    return [*flags, "--epochs", str(max(1, round(epochs * (folds - 1) / folds)))]


def _bundle_run(configs: Sequence[str], flags: Sequence[str]) -> list[str]:
    # one file as itself, several as a JSON list: both read back cleanly from the commands the record keeps
    config = configs[0] if len(configs) == 1 else json.dumps(list(configs))
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, *flags]


def fold_commands(
    configs: Sequence[str], dataset_dir: str, output: Path, fold: int, folds: int, flags: Sequence[str], seed: int
) -> dict[str, list[str]]:
    """The training and evaluation commands of one fold (``fold`` -1: the final run on every section, no evaluation)."""
    run = output / ("final" if fold < 0 else f"fold{fold}")
    if fold < 0:
        flags = final_run_flags(configs, flags, folds)
    split = ["--val_fraction", "0"] if fold < 0 else ["--val_fraction", str(1 / folds), "--val_fold", str(fold)]
    common = ["--dataset_dir", dataset_dir, *split]
    train = _bundle_run(configs, [*common, "--output_dir", str(run), "--model_dir", str(run), "--val_interval",
                                  "1000000", "--seed", str(seed), *flags])  # fmt: skip
    if fold < 0:
        return {"train": train}
    evaluate = _bundle_run([*configs, "configs/evaluate.json"], [*common, "--subset", "validation", "--ckpt_path",
                           str(run / "model_final.pt"), "--output_dir", str(output / f"eval{fold}"), *flags])  # fmt: skip
    return {"train": train, "evaluate": evaluate}


def run_environment(parallel: int) -> dict[str, str]:
    """The environment of each run: ``parallel`` runs side by side share the cores (as ``OMP_NUM_THREADS``, which
    PyTorch reads at start-up), so that they do not oversubscribe them; a thread count the user set is kept."""
    env = dict(os.environ)
    if parallel > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def _run(command: list[str], log: Path, env: dict[str, str], append: bool = False) -> float:
    """Run ``command`` from the bundle root with its output in ``log`` (after what is there with ``append``); seconds
    it took. Raises naming the log."""
    start = time.perf_counter()
    with open(log, "a" if append else "w") as stream:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{shlex.join(command)} failed (exit {code}); see {log}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def _complete(evaluation: Path) -> bool:
    return (evaluation / "metrics.csv").is_file()


def _trained(run: Path) -> bool:
    # torch.save writes a zip archive: one cut off by a kill has no central directory and is trained again
    return zipfile.is_zipfile(run / "model_final.pt")


def resume_epoch(run: Path) -> int | None:
    """The epoch of the newest complete full checkpoint in the folder of a run that was killed while training, or
    None: such a run goes on from there with ``--resume true`` instead of starting over."""
    from scripts.errors import BundleInputError
    from scripts.resume import checkpoint_epoch, latest_checkpoint

    try:
        return checkpoint_epoch(latest_checkpoint(run))
    except BundleInputError:
        return None


def run_fold(fold: int, commands: dict[str, list[str]], output: Path, env: dict[str, str]) -> dict[str, float]:
    """Train and score one fold (``fold`` -1: the final run, trained only) unless done; seconds per stage run now.

    A complete evaluation skips the fold; a complete ``model_final.pt`` skips its training; a killed training goes on
    from its newest full checkpoint (train.json writes one every ``save_interval`` epochs, exactly resumable), and
    ``resumed_from_epoch`` says so: its ``train`` seconds are then those of this call only."""
    name = "final" if fold < 0 else f"fold{fold}"
    run, logs = output / name, output / "logs"
    trained = _trained(run)
    if trained if fold < 0 else _complete(output / f"eval{fold}"):
        return {}
    seconds: dict[str, float] = {}
    if not trained:
        epoch = resume_epoch(run)
        resume = ["--resume", "true"] if epoch is not None else []
        seconds["train"] = _run(commands["train"] + resume, logs / f"{name}.log", env, append=epoch is not None)
        if epoch is not None:
            seconds["resumed_from_epoch"] = epoch
    if fold >= 0:
        seconds["evaluate"] = _run(commands["evaluate"], logs / f"eval{fold}.log", env)
    return seconds


def cross_validate(
    output: str,
    dataset_dir: str,
    folds: int = 5,
    parallel: int = 1,
    config_file: str | Sequence[str] = "configs/train.json",
    overrides: str | Sequence[str] = "",
    final: bool = False,
    baseline: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the cross-validation described in the module docstring; returns (and writes to
    ``<output>/cross_validation.json``) the commands, seconds per run, the pooled scores and, with ``baseline``
    (evaluation folders, e.g. ``'runs/cv/b0/eval*'``), the paired comparison with them."""
    from scripts.evaluation import compare_pooled, pooled_scores
    from scripts.settings import integer

    folds, parallel = integer(folds, "folds", 2, 100), integer(parallel, "parallel", 1, 64)
    configs, flags = config_list(config_file), recipe_flags(overrides)
    out = Path(output).resolve()
    logs = out / "logs"  # apart from the runs, so that a glob such as <output>/eval* names evaluations only
    logs.mkdir(parents=True, exist_ok=True)
    runs = list(range(folds)) + ([-1] if final else [])
    commands = {k: fold_commands(configs, str(dataset_dir), out, k, folds, flags, seed) for k in runs}
    env = run_environment(parallel)

    record = out / "cross_validation.json"
    earlier = json.loads(record.read_text()).get("seconds", {}) if record.is_file() else {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        seconds = {
            str(k): s or earlier.get(str(k), {})
            for k, s in zip(runs, pool.map(lambda k: run_fold(k, commands[k], out, env), runs))
        }
    evaluations = [out / f"eval{k}" for k in range(folds)]
    report: dict[str, Any] = {
        "commands": {str(k): {stage: shlex.join(c) for stage, c in commands[k].items()} for k in runs},
        "seconds": seconds,  # of the runs of earlier calls too, for the runs a resumed call skipped
        "pooled": pooled_scores(evaluations),
    }
    if baseline:
        from bundle.flags import folders

        report["against_baseline"] = compare_pooled(evaluations, folders(baseline))
    record.write_text(json.dumps(report, indent=2, default=str))
    return report
