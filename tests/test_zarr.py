# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""zarr and OME-Zarr (OME-NGFF 0.4 on zarr v2, 0.5 on zarr v3) as input and as chunked output (scripts.io).

The tests run under zarr-python 3 (requirements.txt) and 2 (metadata.json's, for Python 3.10); those of zarr v3
stores skip under zarr-python 2, which cannot read them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import ZARR3, needs_zarr3
from scripts.data import find_images
from scripts.errors import BundleInputError
from scripts.io import (
    PixelSize,
    create_zarr,
    discard_zarr,
    finalize_zarr,
    open_sections,
    open_zarr,
    read_pixel_size,
    read_stack,
    zarr_ngff_version,
    zarr_spacing,
    zarr_temporary,
)
from scripts.outputs import remove_stale_temporaries

STACK = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)


def plain_zarr(path: Path, shape: tuple[int, ...], dtype: object, chunks: tuple[int, ...] | None = None):
    """A new plain zarr v2 array (as zarr-python 2 wrote them, and 3 with ``zarr_format=2``)."""
    extra = {"zarr_format": 2} if ZARR3 else {}
    return zarr.open(str(path), mode="w", shape=shape, chunks=chunks or shape, dtype=dtype, **extra)


def write_ome_zarr(
    path: Path,
    data: np.ndarray,
    axes: str,
    scale: list[float] | None = None,
    separator: str = "/",
    version: str = "0.4",
    units: dict[str, str] | None = None,
) -> Path:
    """``data`` as the one dataset "0" of an OME-Zarr ``version`` group ("0.4": zarr v2, "0.5": zarr v3, written as
    ome-zarr-py and napari write them) with ``axes`` (e.g. "tczyx"), one section a chunk, and ``units`` per axis."""
    kinds = {"t": "time", "c": "channel"}
    chunks = tuple(n if a in "yx" else 1 for a, n in zip(axes, data.shape))
    if version == "0.5":
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        dataset = group.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype, dimension_names=list(axes))
    elif ZARR3:
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        encoding = {"name": "v2", "separator": separator}
        dataset = group.create_array(
            "0", shape=data.shape, chunks=chunks, dtype=data.dtype, chunk_key_encoding=encoding
        )
    else:
        group = zarr.open_group(str(path), mode="w")
        dataset = group.create_dataset(
            "0", shape=data.shape, chunks=chunks, dtype=data.dtype, dimension_separator=separator
        )
    dataset[...] = data
    transforms = [{"type": "scale", "scale": scale or [1.0] * data.ndim}]
    multiscale = {
        "axes": [{"name": a, "type": kinds.get(a, "space")} for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }
    for axis in multiscale["axes"]:
        if units and axis["name"] in units:
            axis["unit"] = units[axis["name"]]
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{"version": version, **multiscale}]
    return path


def test_create_zarr_is_hidden_until_finalized_and_reads_back(tmp_path: Path) -> None:
    target = tmp_path / "v_prob.zarr"
    array = create_zarr(target, (3, 20, 30), np.float32, spacing=(50.0, 4.0, 4.0))
    assert array.chunks == (1, 20, 30) and not target.exists()
    store = array.store
    assert os.path.isdir(zarr_temporary(target)) and str(getattr(store, "root", None) or store.path) == zarr_temporary(
        target
    )
    array[...] = STACK.astype(np.float32)
    assert finalize_zarr(target) == str(target) and not os.path.exists(zarr_temporary(target))
    opened = open_zarr(target)
    assert opened.shape == (3, 20, 30) and opened.dtype == np.float32
    np.testing.assert_array_equal(opened[...], STACK)
    assert zarr_spacing(target) == (50.0, 4.0, 4.0)
    meta = zarr.open_group(str(target), mode="r").attrs["multiscales"][0]
    assert meta["version"] == "0.4" and [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    big = create_zarr(tmp_path / "big.zarr", (2, 3000, 700), np.uint32)
    assert big.chunks == (1, 1024, 700)
    discard_zarr(tmp_path / "big.zarr")
    assert list(tmp_path.iterdir()) == [target]


def test_a_killed_zarr_write_is_removed_at_the_next_start(tmp_path: Path) -> None:
    create_zarr(tmp_path / "x_prob.zarr", (2, 8, 8), np.float32)
    temporary = Path(zarr_temporary(tmp_path / "x_prob.zarr"))
    dead = tmp_path / temporary.name.replace(f"-{os.getpid()}.", "-999999999.")
    temporary.rename(dead)  # as if the process that wrote it had been killed
    assert remove_stale_temporaries(tmp_path) == [dead.name] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("separator", ["/", "."])
def test_ome_zarr_with_size_one_time_and_channel_axes(tmp_path: Path, separator: str) -> None:
    """bioformats2raw writes (t, c, z, y, x) with t = c = 1: read as (z, y, x), whole and by section."""
    path = write_ome_zarr(tmp_path / "v.ome.zarr", STACK[None, None], "tczyx", [1.0, 1.0, 40.0, 5.0, 6.0], separator)
    assert open_zarr(path).shape == (3, 20, 30) and zarr_spacing(path) == (40.0, 5.0, 6.0)
    stack = read_stack(path)
    assert stack.layout == "zyx" and stack.spacing == (40.0, 5.0, 6.0) and stack.array.dtype == np.uint16
    np.testing.assert_array_equal(stack.array, STACK)
    with open_sections(path) as sections:
        np.testing.assert_array_equal(sections.read(1, 3), STACK[1:3])
        np.testing.assert_array_equal(np.stack(list(sections)), STACK)


def test_plain_zarr_array_and_2d_ome_zarr(tmp_path: Path) -> None:
    plain = plain_zarr(tmp_path / "p.zarr", STACK.shape, STACK.dtype, (1, 20, 30))
    plain[...] = STACK
    plain.attrs["element_size_um"] = [0.05, 0.004, 0.004]
    np.testing.assert_array_equal(read_stack(tmp_path / "p.zarr").array, STACK)
    assert zarr_spacing(tmp_path / "p.zarr") == (0.05, 0.004, 0.004)
    flat = write_ome_zarr(tmp_path / "s.zarr", STACK[0], "yx", [5.0, 6.0])
    loaded = read_stack(flat)
    assert loaded.layout == "yx" and loaded.array.shape == (1, 20, 30) and loaded.spacing == (1.0, 5.0, 6.0)


def test_channel_axis_is_refused(tmp_path: Path) -> None:
    path = write_ome_zarr(tmp_path / "two.ome.zarr", np.stack([STACK, STACK]), "czyx")
    for read in (open_zarr, read_stack, open_sections):
        with pytest.raises(BundleInputError, match="2 c") as info:
            read(path)
        assert str(path) in str(info.value) and "channel to segment" in info.value.fix
    plain = plain_zarr(tmp_path / "four.zarr", (2, 3, 8, 8), np.uint8)
    with pytest.raises(BundleInputError, match=r"expected \(Z, Y, X\)"):
        open_zarr(tmp_path / "four.zarr")
    assert plain.ndim == 4


def test_a_zarr_folder_is_one_input_and_its_chunks_never_are(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_ome_zarr(data / "vol.zarr", STACK, "zyx")
    (data / "vol.zarr" / "0" / "stray.tif").write_bytes(b"")  # files inside the store are not inputs
    plain = plain_zarr(data / "raw.zarr", (2, 8, 8), np.uint8)
    plain[...] = 1
    (data / "notzarr.zarr").mkdir()  # an empty folder named .zarr is no image
    assert find_images(data) == [str(data / "raw.zarr"), str(data / "vol.zarr")]
    assert find_images(data / "vol.zarr") == [str(data / "vol.zarr")]


# ------------------------------------------------------------------------------- results in every output format
WIDTH = [4, 4, 8, 8, 16]
SPACING = (50.0, 4.0, 5.0)  # (z, y, x): OME-Zarr scale without unit; nm where the format has a unit
SPACING_UM = [s / 1000 for s in SPACING]  # HDF5 / plain zarr element_size_um
AFFINE = np.array([[0.0, -4.0, 0.0, 10.0], [5.0, 0.0, 0.0, -3.0], [0.0, 0.0, 50.0, 7.5], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One 3 x 64 x 48 volume as ref.tif, ome.ome.zarr (t, c, z, y, x), plain.zarr, h5.h5 and nifti.nii.gz (all with
    ``SPACING`` where the format has one), and a tiny untrained model."""
    import h5py
    import nibabel as nib
    import torch
    from scripts.fusionnet import FusionNet
    from scripts.io import write_tiff
    from scripts.synthetic import make_em_stack

    folder = tmp_path_factory.mktemp("formats")
    data = folder / "in"
    zyx = make_em_stack((3, 64, 48), cell_size=16, seed=4)[0]
    write_tiff(data / "ref.tif", zyx)
    write_ome_zarr(data / "ome.ome.zarr", zyx[None, None], "tczyx", [1.0, 1.0, *SPACING])
    plain = plain_zarr(data / "plain.zarr", zyx.shape, zyx.dtype, (1, 32, 48))
    plain[...] = zyx
    plain.attrs["element_size_um"] = SPACING_UM
    with h5py.File(data / "h5.h5", "w") as f:
        f.create_dataset("volume", data=zyx).attrs["element_size_um"] = SPACING_UM
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0), AFFINE), data / "nifti.nii.gz")
    torch.manual_seed(0)
    torch.save(FusionNet(features=WIDTH).state_dict(), folder / "model.pt")
    return data, folder / "model.pt"


def _run(data: Path, model: Path, output_dir: Path, stream: bool = False, **extra: object) -> list[str]:
    from conftest import run_workflow

    configs = ["inference.json", "inference_stream.json"] if stream else "inference.json"
    # an untrained network's probability sits near 0.5: seeds below 0.5 give cells whose tables can be compared
    options = {"roi_size": [32, 32], "plots": False, "features": WIDTH, "ckpt_path": str(model), "seed_threshold": 0.5}
    options["zoom"] = 1  # formats, not scales: the element_size_um of these inputs (50 x 4 x 5 um) is no EM pixel
    options.update(extra)
    run_workflow(configs, dataset_dir=str(data), output_dir=str(output_dir), **options)
    return sorted(p.name for p in output_dir.iterdir())


@pytest.fixture(scope="module")
def whole(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results of whole-volume inference with the default settings on every input."""
    output_dir = tmp_path_factory.mktemp("whole")
    _run(*inputs, output_dir)
    return output_dir


def test_default_results_are_in_the_input_format(whole: Path) -> None:
    """ "auto": zarr in, OME-Zarr out; NIfTI in, NIfTI out with the input's affine; other inputs TIFF. Every result
    has the input's shape, axis order and spacing, and the values of the TIFF input's results."""
    import nibabel as nib

    extensions = {"h5": "tif", "nifti": "nii.gz", "ome": "zarr", "plain": "zarr", "ref": "tif"}
    expected = [
        f"{s}_{k}.{e if k != 'cells' else 'csv'}" for s, e in extensions.items() for k in ("cells", "prob", "seg")
    ]
    assert sorted(p.name for p in whole.iterdir()) == sorted(expected)
    for kind, dtype in (("prob", np.float32), ("seg", np.uint32)):
        reference = read_stack(whole / f"ref_{kind}.tif").array
        for stem in ("ome", "plain"):
            result = open_zarr(whole / f"{stem}_{kind}.zarr")
            assert result.shape == (3, 64, 48) and result.dtype == dtype and result.chunks == (1, 64, 48)
            assert zarr_spacing(whole / f"{stem}_{kind}.zarr") == pytest.approx(SPACING)
            pixel_size = read_pixel_size(whole / f"{stem}_{kind}.zarr")  # element_size_um in, nanometer scale out
            assert (pixel_size is None) if stem == "ome" else pixel_size.nm == pytest.approx(SPACING)
            np.testing.assert_array_equal(result[...], reference)
        nifti = nib.load(whole / f"nifti_{kind}.nii.gz")
        assert nifti.shape == (48, 64, 3) and nifti.get_data_dtype() == dtype
        np.testing.assert_allclose(nifti.affine, AFFINE)
        np.testing.assert_array_equal(np.asarray(nifti.dataobj), reference.transpose(2, 1, 0))
    tables = {s: _pixel_columns(whole / f"{s}_cells.csv") for s in ("ome", "plain", "ref")}
    assert tables["ome"] == tables["plain"] and len(tables["ome"]) == len(tables["ref"]) > 3


def _pixel_columns(table: Path) -> list[list[str]]:
    """The rows of a cells table without its physical columns, which are in each input's own units (the OME scale
    without unit, element_size_um in µm)."""
    rows = [row.split(",") for row in table.read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if "phys" not in name and "nm" not in name]
    return [[row[i] for i in keep] for row in rows]


@pytest.mark.parametrize("output_format", ["tif", "h5", "zarr", "nii.gz"])
def test_output_format_is_honoured(inputs: tuple[Path, Path], whole: Path, tmp_path: Path, output_format: str) -> None:
    """The NIfTI and OME-Zarr inputs' results in ``output_format``: the TIFF input's values, in the format's axis
    order, with the input's spacing where the format keeps one (TIFF results keep none)."""
    data, model = inputs
    some = tmp_path / "in"
    some.mkdir()
    for name in ("nifti.nii.gz", "ome.ome.zarr"):
        (some / name).symlink_to(data / name)
    names = _run(some, model, tmp_path / "out", instance_mode="none", output_format=output_format)
    assert names == [f"nifti_prob.{output_format}", f"ome_prob.{output_format}"]
    reference = read_stack(whole / "ref_prob.tif").array
    for stem in ("nifti", "ome"):
        result = read_stack(tmp_path / "out" / f"{stem}_prob.{output_format}")
        assert result.array.dtype == np.float32 and result.spacing == (None if output_format == "tif" else SPACING)
        assert result.layout == ("xyz" if output_format == "nii.gz" else "zyx")
        np.testing.assert_array_equal(result.array, reference)


def test_streaming_equals_whole_volume_for_every_format(inputs: tuple[Path, Path], whole: Path, tmp_path: Path) -> None:
    """configs/inference_stream.json reads zarr, OME-Zarr, HDF5 and NIfTI a section at a time and writes the files
    whole-volume inference writes (same names, formats, values, tables)."""
    names = _run(*inputs, tmp_path, stream=True)
    assert names == sorted(p.name for p in whole.iterdir())
    for name in names:
        a, b = whole / name, tmp_path / name
        if name.endswith(".csv"):
            assert a.read_text() == b.read_text()
        else:
            first, second = read_stack(a), read_stack(b)
            assert (first.layout, first.spacing, first.array.dtype) == (
                second.layout,
                second.spacing,
                second.array.dtype,
            )
            np.testing.assert_array_equal(first.array, second.array)


def test_output_format_is_checked(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    from scripts.errors import find_input_error

    for stream in (False, True):
        with pytest.raises(Exception) as info:
            _run(*inputs, tmp_path, stream=stream, output_format="zar")
        error = find_input_error(info.value)
        assert error.what == "output_format" and "--output_format zarr" in error.fix


# ---------------------------------------------------------------------------------- OME-Zarr 0.5 (zarr v3) and 0.4
@needs_zarr3
def test_ome_zarr_05_is_read_lazily_whole_and_by_section(tmp_path: Path) -> None:
    """OME-Zarr 0.5 as ome-zarr-py and napari write it (zarr v3, metadata under "ome"), with size-1 t and c axes."""
    units = dict.fromkeys("zyx", "nanometer")
    path = write_ome_zarr(
        tmp_path / "v.ome.zarr", STACK[None, None], "tczyx", [1, 1, 40.0, 5.0, 6.0], version="0.5", units=units
    )
    assert zarr_ngff_version(path) == "0.5" and open_zarr(path).shape == (3, 20, 30)
    stack = read_stack(path)
    assert stack.spacing == (40.0, 5.0, 6.0) and stack.pixel_size.nm == (40.0, 5.0, 6.0)
    np.testing.assert_array_equal(stack.array, STACK)
    with open_sections(path) as sections:
        np.testing.assert_array_equal(sections.read(1, 3), STACK[1:3])


@pytest.mark.skipif(ZARR3, reason="zarr-python 2 only: it cannot read zarr v3")
def test_zarr_python_2_names_what_reads_ome_zarr_05(tmp_path: Path) -> None:
    (tmp_path / "v.zarr").mkdir()
    (tmp_path / "v.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    with pytest.raises(BundleInputError, match="zarr v3") as info:
        read_stack(tmp_path / "v.zarr")
    assert "zarr 3" in info.value.fix
    with pytest.raises(BundleInputError, match="zarr-python 2"):
        create_zarr(tmp_path / "r.zarr", (2, 8, 8), np.float32, ngff_version="0.5")


@needs_zarr3
@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("z", [50.0, None], ids=["zyx", "yx"])
def test_written_ome_zarr_is_valid(tmp_path: Path, version: str, z: float | None) -> None:
    """What create_zarr writes passes ome-zarr-models' validation of OME-Zarr ``version``, with the pixel size as
    its scale in nanometres (an unknown section spacing: scale 1 without unit)."""
    models = pytest.importorskip(f"ome_zarr_models.v0{version[-1]}.image")
    if version == "0.4":  # under pydantic >= 2.13 (MONAI Label pins 2.14) its v0.4 model needs its references named
        import pydantic_zarr.v2 as specs

        models.Image.model_rebuild(_types_namespace={"ArraySpec": specs.ArraySpec, "GroupSpec": specs.GroupSpec})
    target = tmp_path / "r.ome.zarr"
    array = create_zarr(
        target, (3, 20, 30), np.uint32, pixel_size=PixelSize((z, 4.0, 5.0), "test"), ngff_version=version
    )
    array[...] = STACK
    finalize_zarr(target)
    image = models.Image.from_zarr(zarr.open_group(str(target), mode="r"))
    multiscale = image.attributes.multiscales[0] if version == "0.4" else image.attributes.ome.multiscales[0]
    assert [(a.name, a.unit) for a in multiscale.axes] == [
        ("z", "nanometer" if z else None),
        ("y", "nanometer"),
        ("x", "nanometer"),
    ]
    assert list(multiscale.datasets[0].coordinateTransformations[0].scale) == [z or 1.0, 4.0, 5.0]
    assert (target / ("zarr.json" if version == "0.5" else ".zgroup")).is_file()
    assert read_pixel_size(target).nm == (z, 4.0, 5.0) and zarr_ngff_version(target) == version


@needs_zarr3
def test_zarr_results_keep_an_ome_zarr_05_input_version(tmp_path: Path) -> None:
    """ "auto": a result of an OME-Zarr 0.5 input is 0.5; ``zarr`` is 0.4 and ``ome-zarr-0.5`` is 0.5 for any input."""
    from scripts.io import write_result, write_tiff

    source = write_ome_zarr(tmp_path / "v5.ome.zarr", STACK, "zyx", version="0.5")
    tif = tmp_path / "t.tif"
    write_tiff(tif, STACK)
    cases = [(source, "auto", "0.5"), (source, "zarr", "0.4"), (tif, "ome-zarr-0.5", "0.5"), (tif, "zarr", "0.4")]
    for image, output_format, version in cases:
        out = tmp_path / f"{output_format}-{version}"
        path = write_result(out, image, "_prob", iter(STACK), STACK.shape, STACK.dtype, output_format)
        assert path.endswith("_prob.zarr") and zarr_ngff_version(path) == version, (image, output_format)
        np.testing.assert_array_equal(read_stack(path).array, STACK)
