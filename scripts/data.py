# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Finding EM images and labels in a dataset folder, and splitting labelled stacks into sections.

A labelled dataset is one of:

- a folder with ``images/`` and ``labels/`` holding files with matching names;
- a folder with ISBI-style pairs ``<name>-volume.<ext>`` and ``<name>-labels.<ext>``;
- a MONAI datalist JSON file (``{"training": [{"image": ..., "label": ...}], "validation": [...]}``),
  with paths relative to the JSON file's folder.

Membrane labels follow ISBI 2012 by default (``label_convention`` "isbi": 0 = membrane, one other value = cell
interior); "mask" reads the other common convention (nonzero = membrane: MONAI Label's masks, most annotation tools)
and converts it to ISBI's on reading. Either way a file whose membrane covers most of it, or a section with none,
stops with the fix (:func:`check_label_convention`): an inverted label file would train an inverted model.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from .errors import BundleInputError
from .io import ZARR_SUFFIXES, image_stem, image_suffix, is_zarr, read_stack, require_volume
from .outputs import RESULT_KINDS, atomic_path, check_result_name_length, is_result_stem
from .settings import integer, path_setting, spatial_dimensions

logger = logging.getLogger(__name__)

VOLUME_TAG = "-volume"
LABEL_CONVENTIONS = ("isbi", "mask")
# Membrane is a thin sheet: ISBI 2012 labels 23% of pixels membrane, the FIB-SEM cube's 4-voxel boundaries 19%.
# A label file with more than this fraction "membrane" is almost surely in the other convention.
MAX_MEMBRANE_FRACTION = 0.5
LABELS_TAG = "-labels"


def _check_folder(dataset_dir: str | os.PathLike) -> Path:
    folder = Path(dataset_dir)
    if not folder.exists():
        raise BundleInputError(folder, "dataset folder not found", "pass --dataset_dir with an existing folder")
    if not folder.is_dir():
        raise BundleInputError(folder, "is not a folder", "pass --dataset_dir with a folder of images")
    return folder


def _is_image(path: Path) -> bool:
    """An image input: a file with an image suffix, or a ``*.zarr`` folder (one volume, never its chunk files)."""
    if path.name.startswith(".") or not image_suffix(path):
        return False
    return path.is_dir() and is_zarr(path) if image_suffix(path) in ZARR_SUFFIXES else path.is_file()


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_result_names(images: list[str]) -> None:
    """Refuse inputs whose results would overwrite each other: ``x.tif`` and ``x.png`` (or ``a.tif`` and
    ``a.tiff``, ``two.ome.tif`` and ``two.tif``) both write ``x_prob.tif``, ``a.nii.gz`` and ``a.tif`` both
    ``a_cells.csv``. Stems are compared ignoring case, as on the case-insensitive file systems of macOS and
    Windows."""
    seen: dict[str, str] = {}
    for image in images:
        stem = image_stem(image)
        other = seen.setdefault(stem.casefold(), image)
        if other != image:
            raise BundleInputError(
                f"{other} and {image}",
                f"both give results named {stem}_prob, {stem}_seg, {stem}_cells.csv, ..., so one would overwrite the other",
                "rename one of them (or move it to another folder) and run again",
            )


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` (which need not exist yet) is ``folder`` or inside it, links resolved."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _check_output_dir(images: list[str], sources: list[Path], output_dir: str, folder: Path) -> None:
    """Refuse an ``output_dir`` that is a folder the images are read from (results would mix with the inputs) or
    inside a zarr volume being read (results would be written into its store). A folder inside ``dataset_dir``
    (e.g. ``<dataset_dir>/results``) is fine: only the folder itself and its ``images/`` are read, not their
    other subfolders, so a rerun never segments its own results."""
    for source in sources:
        if _same_folder(Path(output_dir), source):
            raise BundleInputError(
                output_dir,
                f"output folder is the folder the images are read from ({source}), so results would mix with them",
                f"pass another --output_dir, e.g. {folder / 'results'}",
            )
    for image in images:
        if Path(image).is_dir() and _inside(output_dir, image):
            raise BundleInputError(
                output_dir,
                f"output folder is inside the zarr volume {image}, so results would be written into its store",
                f"pass an --output_dir outside it, e.g. {Path(image).parent / 'results'}",
            )


def find_images(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> list[str]:
    """All images to segment in ``dataset_dir``: those in the folder and in its ``images/`` subfolder (the
    labelled datasets' layout), both; a log line says so when both hold images.

    A ``*.zarr`` folder (zarr or OME-Zarr) is one image, and a zarr folder given as ``dataset_dir`` is taken as
    the one image. ISBI-style label files (``*-labels.*``) and results of an earlier run (``*_prob.*``, ``*_seg.*``,
    ``*_overlay.png``, ``*_morphology.png``) are skipped; a single image file is taken as it is. Raises
    ``BundleInputError`` if there are none, if two images would write the same result files
    (:func:`check_result_names`), if ``output_dir`` is a folder the images are read from or inside a zarr volume
    (:func:`_check_output_dir`), or if a result name would be too long for ``output_dir``'s file system
    (``scripts.outputs.check_result_name_length``).
    """
    dataset_dir = path_setting(dataset_dir, "dataset_dir")
    out = None if output_dir is None else path_setting(output_dir, "output_dir")
    if Path(dataset_dir).is_file() and image_suffix(dataset_dir) or Path(dataset_dir).is_dir() and is_zarr(dataset_dir):
        images = [str(dataset_dir)]  # one image file, or one zarr volume (its folder)
        if out is not None:
            _check_output_dir(images, [], out, Path(dataset_dir).parent)
            check_result_name_length(dataset_dir, image_stem(dataset_dir), out)
        return images
    folder = _check_folder(dataset_dir)
    sources = [folder / "images", folder] if (folder / "images").is_dir() else [folder]
    images, results, counts = [], [], {}
    for source in sources:
        found = []
        for path in _images_in(source):
            stem = image_stem(path)
            if stem.endswith(LABELS_TAG):
                continue
            (results if is_result_stem(stem) else found).append(str(path))
        counts[source] = len(found)
        images += found
    used = [source for source in sources if counts[source]]
    if results:
        names = ", ".join(Path(p).name for p in results[:3]) + (" ..." if len(results) > 3 else "")
        kinds = "/".join(RESULT_KINDS[:2] + RESULT_KINDS[3:])
        logger.warning("%s: skipped %d result file(s) of an earlier run (%s; names ending %s)", folder,
                       len(results), names, kinds)  # fmt: skip
    if not images:
        raise BundleInputError(
            folder,
            "no images found" + (" (nor in its images/ subfolder)" if len(sources) == 2 else ""),
            "put .tif/.tiff/.h5/.nii.gz/.zarr/.mha/.png images in it, or pass another --dataset_dir",
        )
    if len(used) == 2:  # images/ does not hide the stacks beside it: both are segmented, and the log says so
        logger.info("%s: segmenting %d image(s) in images/ and %d beside it", folder, *counts.values())
    if out is not None:
        _check_output_dir(images, used, out, folder)
        for image in images:
            check_result_name_length(image, image_stem(image), out)
    check_result_names(images)
    return images


def _pairs_from_datalist(path: Path) -> dict[str, list[dict[str, str]]]:
    from monai.data import load_decathlon_datalist

    lists = {}
    for key in ("training", "validation"):
        try:
            lists[key] = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key)
        except ValueError:
            lists[key] = []
        except Exception as e:
            raise BundleInputError(path, f"cannot be read as a MONAI datalist ({e})", "fix the JSON syntax") from e
    if not lists["training"]:
        raise BundleInputError(path, "has no 'training' entries", 'add {"training": [{"image": ..., "label": ...}]}')
    return lists


def write_datalist(
    images: str | os.PathLike | list, labels: str | os.PathLike | list, output: str | os.PathLike
) -> dict[str, list[dict[str, str]]]:
    """Write a MONAI datalist JSON, ``{"training": [{"image": ..., "label": ...}, ...]}``, to ``output`` for a labelled
    dataset whose file names do not pair themselves (e.g. ``volume.tif`` + ``neuron-labels.tif``), so that
    ``--dataset_dir <output>`` trains on it. ``images`` and ``labels``: one path each, or lists (or comma-separated
    strings) of equal length. Paths are written relative to the JSON file's folder, as MONAI reads them.
    Returns the datalist."""

    def paths(value: str | os.PathLike | list, name: str) -> list[Path]:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        found = [Path(str(v).strip()) for v in items if str(v).strip()]
        for path in found:
            if not path.is_file():
                raise BundleInputError(path, "file not found", f"pass --{name} with existing image files")
        if not found:
            raise BundleInputError(f"--{name}", "names no file", f"pass --{name} path/to/stack.tif")
        return found

    image_paths, label_paths = paths(images, "image"), paths(labels, "label")
    if len(image_paths) != len(label_paths):
        problem = f"{len(image_paths)} images but {len(label_paths)} labels"
        raise BundleInputError("--image/--label", problem, "give one label stack per image stack, in the same order")
    out = Path(output)
    base = out.resolve().parent
    pairs = [
        {"image": os.path.relpath(i.resolve(), base), "label": os.path.relpath(lab.resolve(), base)}
        for i, lab in zip(image_paths, label_paths)
    ]
    datalist = {"training": pairs}
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(datalist, indent=4) + "\n")
    return datalist


def find_labelled_pairs(dataset_dir: str | os.PathLike) -> dict[str, list[dict[str, str]]]:
    """Image/label pairs of a labelled dataset (see the module docstring).

    Returns ``{"training": [...], "validation": [...]}``, each a list of ``{"image": path, "label": path}``;
    "validation" is empty unless a datalist JSON names it.
    """
    path = Path(path_setting(dataset_dir, "dataset_dir"))
    if path.suffix.lower() == ".json" and path.is_file():
        return _pairs_from_datalist(path)
    folder = _check_folder(path)
    pairs = []
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        labels = {image_stem(p): p for p in _images_in(folder / "labels")}
        for image in _images_in(folder / "images"):
            label = labels.get(image_stem(image))
            if label is None:
                raise BundleInputError(
                    image,
                    "has no label file of the same name in labels/",
                    f"add labels/{image.name} or remove the image",
                )
            pairs.append({"image": str(image), "label": str(label)})
    else:
        files = _images_in(folder)
        labels = {image_stem(p)[: -len(LABELS_TAG)]: p for p in files if image_stem(p).endswith(LABELS_TAG)}
        for image in files:
            stem = image_stem(image)
            if stem.endswith(VOLUME_TAG) and stem[: -len(VOLUME_TAG)] in labels:
                pairs.append({"image": str(image), "label": str(labels[stem[: -len(VOLUME_TAG)]])})
    if not pairs:
        raise BundleInputError(
            folder,
            "no labelled images found",
            "use images/ + labels/ with matching names, ISBI-style <name>-volume.tif + <name>-labels.tif, "
            "or a MONAI datalist JSON",
        )
    return {"training": pairs, "validation": []}


def check_membrane_labels(label: np.ndarray, path: str) -> None:
    """Labels must be binary-like: 0 = membrane and one other value = cell (ISBI 2012 convention)."""
    values = np.unique(label)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise BundleInputError(
            path,
            f"labels are not binary-like (values {shown})",
            "use 0 for membrane and one value (e.g. 255) for cell interior, as in ISBI 2012",
        )


def _convention(label_convention: str) -> str:
    if label_convention not in LABEL_CONVENTIONS:
        raise BundleInputError(
            "label_convention",
            f"unknown value {label_convention!r}",
            "pass isbi (0 = membrane, ISBI 2012) or mask (nonzero = membrane, MONAI Label and most annotation tools)",
        )
    return label_convention


def isbi_labels(label: np.ndarray, label_convention: str = "isbi") -> np.ndarray:
    """``label`` in ISBI's convention (0 = membrane): as it is for "isbi", ``label == 0`` (as uint8) for "mask"."""
    if _convention(label_convention) == "mask":
        return (np.asarray(label) == 0).astype(np.uint8)
    return label


def check_label_convention(label: np.ndarray, path: str, label_convention: str = "isbi") -> None:
    """Stop where ISBI-convention labels ``(Z, Y, X)`` (or ``(Y, X)``) read from ``path`` with ``label_convention``
    look inverted: membrane covers more than :data:`MAX_MEMBRANE_FRACTION` of the file, or none of a section."""
    stack = np.asarray(label).reshape((-1, *np.shape(label)[-2:]))
    membrane = stack == 0
    fraction = float(membrane.mean()) if membrane.size else 0.0
    empty = [z for z in range(len(stack)) if not membrane[z].any()]
    if fraction <= MAX_MEMBRANE_FRACTION and not empty:
        return
    value = "0" if label_convention == "isbi" else "nonzero"
    other = "mask" if label_convention == "isbi" else "isbi"
    meaning = "nonzero = membrane" if other == "mask" else "0 = membrane"
    where = f"covers {fraction:.0%} of the pixels" if not empty else f"is missing from section(s) {empty[:5]}"
    raise BundleInputError(
        path,
        f"membrane (value {value}, label_convention {label_convention}) {where}; membranes are thin lines, so the "
        "labels look inverted",
        f"pass --label_convention {other} ({meaning}) if that is how they were saved, else fix the file",
    )


def _read_pair(pair: dict[str, str], target: str, label_convention: str = "isbi") -> tuple[np.ndarray, np.ndarray]:
    image = read_stack(pair["image"]).array
    label = read_stack(pair["label"]).array
    if image.shape != label.shape:
        raise BundleInputError(
            pair["label"],
            f"shape {label.shape} does not match its image {pair['image']} of shape {image.shape}",
            "give each image a label of the same size and section count",
        )
    if target == "membrane":
        label = isbi_labels(label, label_convention)
        check_membrane_labels(label, pair["label"])
        if label.size and (label == label.flat[0]).all():
            kind = "membrane (0)" if label.flat[0] == 0 else "cell interior"
            raise BundleInputError(
                pair["label"],
                f"every pixel has the same value {label.flat[0]} ({kind}), so there is nothing to learn or score",
                "check the label file: 0 = membrane and one other value (e.g. 255) = cell interior, as in ISBI 2012",
            )
        check_label_convention(label, pair["label"], label_convention)
    return image, label


def _check_volume(pair: dict[str, str], image: np.ndarray) -> None:
    """A 3D network needs stacks: a single 2D section would be trained on or scored as a one-section volume."""
    fix = "give 3D stacks, or train/evaluate a 2D network (--spatial_dims 2, without configs/train_3d.json)"
    require_volume(pair["image"], image.shape, fix)


def input_channels(context_sections: int, spatial_dims: int = 2) -> int:
    """The network's input channels: the section and ``context_sections`` neighbours on each side (2D networks);
    ``BundleInputError`` for a negative count, or any context for a 3D network, which sees its neighbours itself."""
    context = integer(context_sections, "context_sections", 0, 1)
    if context and spatial_dims != 2:
        raise BundleInputError(
            "context_sections", "is for 2D networks; a 3D network sees the neighbouring sections itself", "pass 0"
        )
    return 2 * context + 1


def with_neighbours(stack: np.ndarray, context_sections: int) -> np.ndarray:
    """Each section with its ``context_sections`` neighbours on either side as channels (2.5D input).

    Args:
        stack: sections, shape ``(Z, Y, X)``.
        context_sections: neighbours taken on each side; 0 gives ``stack[:, None]``.

    Returns:
        ``(Z, 2 * context_sections + 1, Y, X)``, channel ``context_sections`` being the section itself and the
        channels before/after it the sections above/below. Beyond the first and last section the edge section is
        repeated, so a lone 2D image becomes copies of itself.
    """
    context = integer(context_sections, "context_sections", 0, 1)
    offsets = np.arange(-context, context + 1)
    index = np.clip(np.arange(stack.shape[0])[:, None] + offsets[None], 0, stack.shape[0] - 1)
    return stack[index]


def _sections(
    pairs: list[dict[str, str]], target: str, context_sections: int = 0, label_convention: str = "isbi"
) -> list[dict]:
    items = []
    for pair in pairs:
        image, label = _read_pair(pair, target, label_convention)
        image = with_neighbours(image, context_sections)
        for z in range(image.shape[0]):
            items.append({"image": image[z], "label": label[z][None], "name": f"{Path(pair['image']).name}[{z}]"})
    return items


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 <= float(val_fraction) < 1.0:
        raise BundleInputError("val_fraction", f"must be in [0, 1), got {val_fraction}", "pass e.g. --val_fraction 0.2")


def held_out_block(n_sections: int, val_fraction: float = 0.2, val_fold: int = -1) -> slice:
    """The contiguous block of sections held out for validation, as a slice of ``range(n_sections)``.

    The ``n_sections`` split into blocks of ``ceil(val_fraction * n_sections)``; ``val_fold`` -1 holds out the last
    that many sections, 0, 1, ... the first, second, ... block (cross-validation folds: for 20 sections and 0.2,
    folds 0-4 hold out sections 0-3, 4-7, ..., 16-19). ``val_fraction`` 0 holds out nothing.
    """
    _check_fraction(val_fraction)
    fold = integer(val_fold, "val_fold", -1, 0)
    n_val = math.ceil(float(val_fraction) * n_sections)
    if n_val == 0:
        return slice(n_sections, n_sections)
    folds = math.ceil(n_sections / n_val)
    if fold == -1:
        return slice(n_sections - n_val, n_sections)
    if not 0 <= fold < folds:
        raise BundleInputError(
            "val_fold",
            f"must be -1 (the last {n_val} sections) or a fold 0..{folds - 1} ({n_sections} sections in blocks of "
            f"{n_val}), got {val_fold}",
            f"pass --val_fold between 0 and {folds - 1}, or -1",
        )
    start = fold * n_val
    return slice(start, min(start + n_val, n_sections))


def split_sections(
    dataset_dir: str | os.PathLike,
    val_fraction: float = 0.2,
    target: str = "membrane",
    val_fold: int = -1,
    context_sections: int = 0,
    label_convention: str = "isbi",
) -> dict[str, list[dict]]:
    """Read a labelled dataset as 2D sections and hold out a contiguous block of them for validation.

    Each item is ``{"image": (C, Y, X) array, "label": (1, Y, X) array, "name": "file.tif[z]"}``, with ``C = 1``, or
    ``2 * context_sections + 1`` channels holding the neighbouring sections of the same stack
    (:func:`with_neighbours`; neighbours come from the whole stack, images only, whichever side they are on).
    Without a "validation" list in a datalist JSON, the sections (in file order, then section order) split into
    blocks of ``ceil(val_fraction * n)`` and :func:`held_out_block` picks the one held out: by default
    (``val_fold`` -1) the last, for one ISBI stack of 20 sections and 0.2 sections 16-19. A contiguous block keeps
    most neighbouring sections on one side; only the sections next to it border the other set.

    ``target`` "membrane" reads labels in ``label_convention`` (see the module docstring) and checks that they are
    binary-like and not inverted; other targets take any labels.

    Returns ``{"training": [...], "validation": [...]}``.
    """
    _check_fraction(val_fraction)
    pairs = find_labelled_pairs(dataset_dir)
    training = _sections(pairs["training"], target, context_sections, label_convention)
    if pairs["validation"]:
        if integer(val_fold, "val_fold", -1, 0) != -1:
            raise BundleInputError(
                dataset_dir, "names its validation sections, so --val_fold has nothing to choose", "drop --val_fold"
            )
        validation = _sections(pairs["validation"], target, context_sections, label_convention)
        return {"training": training, "validation": validation}
    block = held_out_block(len(training), val_fraction, val_fold)
    n_val = block.stop - block.start
    if n_val >= len(training):
        raise BundleInputError(
            dataset_dir,
            f"only {len(training)} labelled section(s), too few to hold out {n_val} for validation",
            "add labelled sections or lower --val_fraction (0 disables validation)",
        )
    return {"training": training[: block.start] + training[block.stop :], "validation": training[block]}


def image_datalist(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for every image :func:`find_images` finds, for inference into ``output_dir``."""
    return [{"image": path} for path in find_images(dataset_dir, output_dir)]


def split_volumes(
    dataset_dir: str | os.PathLike,
    val_fraction: float = 0.2,
    target: str = "boundaries",
    val_fold: int = -1,
    label_convention: str = "isbi",
) -> dict[str, list[dict]]:
    """Read labelled stacks as 3D volumes; hold out the last ``ceil(val_fraction * Z)`` sections of each.

    Each item is ``{"image": (1, Z, Y, X) array, "label": (1, Z, Y, X) array, "name": "file.tif[z0:z1]"}``; a
    datalist JSON's "validation" list is used whole instead. For the 250^3 FIB-SEM cube and 0.2 the held-out
    sub-cube is z = 200..249. Only the last block is held out (``val_fold`` -1): another fold would cut each
    training volume in two.
    """
    _check_fraction(val_fraction)
    if integer(val_fold, "val_fold", -1, 0) != -1:
        raise BundleInputError(
            "val_fold", f"is {val_fold}, but 3D volumes hold out only their last sections", "drop --val_fold for 3D"
        )
    pairs = find_labelled_pairs(dataset_dir)

    def item(pair: dict[str, str], image: np.ndarray, label: np.ndarray, z0: int, z1: int) -> dict:
        return {
            "image": image[None, z0:z1],
            "label": label[None, z0:z1],
            "name": f"{Path(pair['image']).name}[{z0}:{z1}]",
        }

    split: dict[str, list[dict]] = {"training": [], "validation": []}
    if pairs["validation"]:
        for subset in split:
            for pair in pairs[subset]:
                image, label = _read_pair(pair, target, label_convention)
                _check_volume(pair, image)
                split[subset].append(item(pair, image, label, 0, image.shape[0]))
        return split
    for pair in pairs["training"]:
        image, label = _read_pair(pair, target, label_convention)
        _check_volume(pair, image)
        z = image.shape[0]
        cut = z - math.ceil(float(val_fraction) * z)
        if cut < 1:
            raise BundleInputError(
                pair["image"], f"only {z} section(s), too few to hold out any", "lower --val_fraction"
            )
        split["training"].append(item(pair, image, label, 0, cut))
        if cut < z:
            split["validation"].append(item(pair, image, label, cut, z))
    return split


def labelled_items(
    dataset_dir: str | os.PathLike,
    subset: str = "all",
    val_fraction: float = 0.2,
    target: str = "membrane",
    spatial_dims: int = 2,
    val_fold: int = -1,
    context_sections: int = 0,
    label_convention: str = "isbi",
) -> list[dict]:
    """Labelled items to score: 2D sections (``spatial_dims`` 2) or volumes (3); "all" of them, or the
    "training"/"validation" part of :func:`split_sections` / :func:`split_volumes` (``val_fold`` picks the
    cross-validation fold; ``context_sections`` and ``label_convention`` as in :func:`split_labelled`)."""
    if subset not in ("all", "training", "validation"):
        raise BundleInputError("subset", f"unknown value {subset!r}", "use all, training or validation")
    if subset == "all":
        return split_labelled(dataset_dir, 0.0, target, spatial_dims, -1, context_sections, label_convention)[
            "training"
        ]
    split = split_labelled(
        dataset_dir, val_fraction, target, spatial_dims, val_fold, context_sections, label_convention
    )
    return split[subset]


def split_labelled(
    dataset_dir: str | os.PathLike,
    val_fraction: float = 0.2,
    target: str = "membrane",
    spatial_dims: int = 2,
    val_fold: int = -1,
    context_sections: int = 0,
    label_convention: str = "isbi",
) -> dict[str, list[dict]]:
    """:func:`split_sections` for a 2D network (``context_sections`` neighbours as extra channels), or
    :func:`split_volumes` for a 3D one (which sees its neighbours already)."""
    spatial_dims = spatial_dimensions(spatial_dims)
    input_channels(context_sections, spatial_dims)
    _convention(label_convention)
    if spatial_dims == 3:
        return split_volumes(dataset_dir, val_fraction, target, val_fold, label_convention)
    return split_sections(dataset_dir, val_fraction, target, val_fold, context_sections, label_convention)
