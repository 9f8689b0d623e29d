# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle pack``: the bundle as a MONAI model-zoo release zip.

Writes, under ``output_dir``:

- ``<bundle_name>_v<version>.zip``: one top-level folder ``<bundle_name>/`` with ``configs/``, ``models/``,
  ``scripts/``, ``docs/`` (the model card README.md, the research record experiments.md it links to, its picture),
  ``sample/``, ``LICENSE`` and ``large_files.yml`` (the layout ``python -m monai.bundle download`` unpacks);
  no tests, caches, runs or build outputs. Entries are sorted and time-stamped 1980-01-01, so the same files
  always give the same zip and checksum.
- ``<zip>.sha256``: the zip's SHA-256 in ``sha256sum`` format (``sha256sum -c`` checks it).
- ``model_info.json``: the entry ``{"<bundle_name>_v<version>": {"checksum": <sha1>, "source": <url>}}`` as
  Project-MONAI/model-zoo's ``models/model_info.json`` keeps it (SHA-1, as the zoo's CI computes it); entries
  already in the file are kept.

``bundle_name`` and ``version`` come from ``configs/metadata.json``, the one source of truth: ``name`` there is
the human title (as in the zoo, e.g. "Spleen CT segmentation"), ``bundle_name`` the folder and file name (as the
zoo's folder name, e.g. ``spleen_ct_segmentation``). Every file is written under a temporary name and renamed
when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scripts.errors import BundleInputError, as_bool
from scripts.outputs import atomic_path

BUNDLE_ROOT = Path(__file__).resolve().parent.parent
DIST_DIR = str(BUNDLE_ROOT / "dist")
ROOT_DIR = str(BUNDLE_ROOT)
PACKED_FOLDERS = ("configs", "docs", "models", "sample", "scripts")
PACKED_FILES = ("LICENSE", "large_files.yml")  # large_files.yml: where present
REQUIRED_FILES = (
    "configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md", "docs/experiments.md",
    "LICENSE",
)  # fmt: skip
SKIPPED_NAMES = frozenset({"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".DS_Store", ".git"})
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".part", ".swp")
# MONAI splits model_info keys "<name>_v<version>" at the first "_v" (regex r"_v\d*."), so a name must not contain one.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9]+(?:_(?!v)[A-Za-z0-9]+)*$")
VERSION_PATTERN = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CHUNK = 1 << 20


def read_bundle_id(bundle_root: str | os.PathLike) -> tuple[str, str]:
    """``(bundle_name, version)`` from ``<bundle_root>/configs/metadata.json``, checked for use in file names."""
    meta_path = Path(bundle_root) / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise BundleInputError(meta_path, "not found", "run from a bundle root that has configs/metadata.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleInputError(meta_path, f"is not valid JSON ({e})", "fix the JSON syntax") from None
    name, version = meta.get("bundle_name"), meta.get("version")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise BundleInputError(
            meta_path,
            f'"bundle_name" must be words joined by "_" (letters and digits, no "_v"), got {name!r}',
            'add e.g. "bundle_name": "fusionnet_em_segmentation" (the zip and the downloaded folder take this name)',
        )
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        problem = f'"version" must be MAJOR.MINOR.PATCH, got {version!r}'
        raise BundleInputError(meta_path, problem, 'set e.g. "version": "0.1.0"')
    return name, version


def _skipped(relative: Path) -> bool:
    return any(part in SKIPPED_NAMES for part in relative.parts) or relative.name.endswith(SKIPPED_SUFFIXES)


def git_tracked(bundle_root: str | os.PathLike) -> set[Path] | None:
    """Files git tracks under ``bundle_root`` (relative paths), or None if it is not in a git checkout."""
    try:
        result = subprocess.run(
            ["git", "-C", str(bundle_root), "ls-files", "-z"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {Path(p) for p in result.stdout.split("\0") if p} if result.returncode == 0 else None


def bundle_files(bundle_root: str | os.PathLike, tracked_only: bool = True) -> list[Path]:
    """The files a release holds, relative to ``bundle_root`` and sorted; raises if a required one is missing.

    In a git checkout with ``tracked_only``, files git does not track (local datalists, scratch configs) stay out,
    except ``models/model.pt``, which a checkout may hold untracked (e.g. fetched with git-lfs or trained locally).
    """
    root = Path(bundle_root)
    for required in REQUIRED_FILES:
        if not (root / required).is_file():
            fix = f"restore {required}"
            if required.startswith("models/"):
                fix = (
                    "restore it (git checkout -- models/model.pt) or train one with configs/train.json, which writes "
                    "models/model.pt"
                )
            raise BundleInputError(root / required, "required in a release but missing", fix)
    tracked = git_tracked(root) if tracked_only else None
    if tracked is not None:
        tracked.add(Path("models/model.pt"))
    files = [
        Path(f)
        for f in PACKED_FILES
        if f in REQUIRED_FILES or ((root / f).is_file() and (tracked is None or Path(f) in tracked))
    ]
    for folder in PACKED_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not _skipped(relative) and (tracked is None or relative in tracked):
                files.append(relative)
    return sorted(files, key=lambda p: p.as_posix())


def _check_weights(path: Path) -> None:
    from scripts.checkpoint import read_state_dict

    read_state_dict(path)  # a truncated or foreign file stops the release with a BundleInputError


def write_zip(
    bundle_root: str | os.PathLike, files: Iterable[Path], top: str, path: str | os.PathLike, progress: bool = True
) -> None:
    """Write ``files`` (relative to ``bundle_root``) into the zip ``path`` under the folder ``top``, atomically.

    Entries are deflated, sorted as given and time-stamped ``ZIP_DATE`` with mode 0644, so equal inputs give
    byte-identical zips. A tqdm bar counts the bytes read.
    """
    from tqdm import tqdm

    root, files = Path(bundle_root), list(files)
    total = sum((root / f).stat().st_size for f in files)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"pack {Path(path).name}",
               disable=not progress)  # fmt: skip
    with bar, atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            info = zipfile.ZipInfo(f"{top}/{relative.as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            size = (root / relative).stat().st_size
            with (root / relative).open("rb") as source, archive.open(info, "w", force_zip64=size > 2**31) as target:
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    bar.update(len(chunk))


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file (``algorithm``: any ``hashlib`` name, e.g. "sha256", "sha1")."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _update_model_info(path: Path, key: str, entry: dict[str, str]) -> None:
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            fix = "delete it or fix it; pack adds its entry to it"
            raise BundleInputError(path, f"is not valid JSON ({e})", fix) from None
    info[key] = entry
    _write_text(path, json.dumps(info, indent=4) + "\n")


def pack(
    output_dir: str = DIST_DIR,
    source: str | None = None,
    bundle_root: str = ROOT_DIR,
    progress: bool = True,
    tracked_only: bool = True,
) -> dict[str, Any]:
    """Pack the bundle as a model-zoo release: <output_dir>/<bundle_name>_v<version>.zip, .sha256, model_info.json.

    Args:
        output_dir: where the three files go (default <bundle root>/dist).
        source: the URL the zip will be published at, recorded in model_info.json; one ending in "/" gets the zip's
            name appended. Default: the zip's own file:// URL, which ``monai.bundle download --url`` accepts.
        bundle_root: the bundle to pack (default: this repository).
        progress: show a progress bar.
        tracked_only: in a git checkout, pack only the files git tracks (and models/model.pt), so local datalists
            and scratch files stay out of the release; false packs every file in the packed folders.

    Returns:
        the zip's path, name, version, file count, size, sha256, sha1 and source.
    """
    root = Path(bundle_root).resolve()
    name, version = read_bundle_id(root)
    out = Path(output_dir).resolve()
    if any(out == root / folder or root / folder in out.parents for folder in PACKED_FOLDERS):
        raise BundleInputError(output_dir, "is inside a folder that pack puts in the zip", "pass --output_dir dist")
    files = bundle_files(root, as_bool(tracked_only, "tracked_only"))
    _check_weights(root / "models" / "model.pt")
    release = f"{name}_v{version}"
    zip_path = out / f"{release}.zip"
    write_zip(root, files, name, zip_path, progress=as_bool(progress, "progress"))
    sha256, sha1 = file_digest(zip_path, "sha256"), file_digest(zip_path, "sha1")
    _write_text(out / f"{zip_path.name}.sha256", f"{sha256}  {zip_path.name}\n")
    if source is None:
        url = zip_path.as_uri()
    else:
        url = source + zip_path.name if source.endswith("/") else source
    _update_model_info(out / "model_info.json", release, {"checksum": sha1, "source": url})
    return {
        "zip": str(zip_path),
        "bundle_name": name,
        "version": version,
        "files": len(files),
        "bytes": zip_path.stat().st_size,
        "sha256": sha256,
        "sha1": sha1,
        "source": url,
    }
