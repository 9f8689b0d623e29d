# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""metadata.json names every third-party package the bundle needs at run time, as the MONAI model zoo installs them.

The zoo's CI builds its environment from metadata.json alone (``ci/get_bundle_requirements.py``: monai_version,
pytorch_version, numpy_version, required_packages_version), so a package imported by scripts/ or a config but
missing there breaks a bundle that works here. ``python -m bundle metadata_requirements`` prints the same list;
.ci/run installs it into a fresh virtual environment and runs inference.json there.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli

META = json.loads((ROOT / "configs" / "metadata.json").read_text())
FIRST_PARTY = {"scripts", "bundle"}
# top-level module -> the distribution pip installs it from, where the names differ
DISTRIBUTIONS = {"skimage": "scikit-image", "yaml": "pyyaml", "ignite": "pytorch-ignite", "PIL": "pillow"}
# packages a config needs without importing them itself: _target_ -> distribution
TARGET_NEEDS = {"ignite.handlers.ProgressBar": "tqdm", "TensorBoardStatsHandler": "tensorboard"}
# always needed: `python -m monai.bundle` is a fire command line, and its verify_metadata validates with jsonschema
ALWAYS = {"fire", "jsonschema"}
IMPORT = re.compile(r"^\$\s*(?:import\s+([\w.]+)|from\s+([\w.]+)\s+import\b)")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution(module: str) -> str:
    return _normalize(DISTRIBUTIONS.get(module, module))


def declared() -> dict[str, str]:
    """Normalized distribution name -> pinned version, as the zoo's requirements list has them."""
    pins = {"monai": META["monai_version"], "torch": META["pytorch_version"], "numpy": META["numpy_version"]}
    for key in ("optional_packages_version", "required_packages_version"):
        pins.update(META.get(key, {}))
    return {_normalize(name): version for name, version in pins.items()}


def _config_strings(value: object, key: str = "") -> list[tuple[str, str]]:
    """(key, string) for every string in a parsed config, with the key it sits under."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _config_strings(v, str(k))]
    if isinstance(value, list):
        return [pair for v in value for pair in _config_strings(v, key)]
    return [(key, value)] if isinstance(value, str) else []


#: imported where available, with a warning where not (scripts/instances.py drops a default agglomeration)
OPTIONAL = {"waterz": "3D agglomeration: wheels for Python >= 3.11 only"}


def runtime_needs() -> dict[str, set[str]]:
    """Distribution -> the files that need it: imports in scripts/*.py, ``$import``/``$from`` and dotted
    ``_target_`` modules in configs/, and the packages some targets and YAML configs need (see above)."""
    needs: dict[str, set[str]] = {}

    def need(module: str, where: str) -> None:
        top = module.split(".")[0]
        if top and top not in FIRST_PARTY and top not in sys.stdlib_module_names:
            needs.setdefault(distribution(top), set()).add(where)

    for path in sorted((ROOT / "scripts").rglob("*.py")):  # the package and its sub-packages (scripts/io/, ...)
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    need(alias.name, where)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                need(node.module, where)
    for path in sorted((ROOT / "configs").iterdir()):
        if path.suffix not in (".json", ".yaml", ".yml"):
            continue
        where = f"configs/{path.name}"
        if path.suffix != ".json":
            needs.setdefault("pyyaml", set()).add(where)  # MONAI reads YAML configs with PyYAML
        for key, text in _config_strings(yaml.safe_load(path.read_text())):
            match = IMPORT.match(text)
            if match:
                need(match.group(1) or match.group(2), where)
            if key == "_target_":
                if "." in text:
                    need(text, where)
                if text in TARGET_NEEDS:
                    needs.setdefault(TARGET_NEEDS[text], set()).add(where)
    for name in ALWAYS:
        needs.setdefault(name, set()).add("python -m monai.bundle")
    return needs


def test_every_package_the_bundle_needs_at_run_time_is_in_metadata() -> None:
    needs, pins = runtime_needs(), declared()
    assert {"torch", "monai", "numpy", "scikit-image", "tqdm", "pyyaml", "pytorch-ignite"} <= set(needs)
    missing = {name: sorted(where) for name, where in needs.items() if name not in pins and name not in OPTIONAL}
    assert not missing, f"add these to configs/metadata.json required_packages_version: {missing}"


def test_optional_packages_are_in_requirements_and_not_in_metadata() -> None:
    """A package the bundle works without (``OPTIONAL``) is pinned in requirements.txt, for Python >= 3.11, and left
    out of metadata.json: the zoo installs that list on Python 3.10, where it has no wheel."""
    requirements = (ROOT / "requirements.txt").read_text()
    for name in OPTIONAL:
        assert re.search(rf"^{name}==[\d.]+; python_version >= \"3.11\"$", requirements, re.M), name
        assert name not in declared() and name in runtime_needs()


def test_zarr_is_pinned_with_its_codecs() -> None:
    """zarr imports numcodecs, whose 0.16 removed what zarr 2 imports: metadata.json pins both, a pair that works
    (zarr 2.18 with numcodecs < 0.16; it is zarr 2 because zarr 3 needs Python >= 3.11, the zoo's CI has 3.10)."""
    pins = declared()
    assert {"zarr", "numcodecs", "mrcfile"} <= set(pins)
    zarr_major = int(pins["zarr"].split(".")[0])
    codecs = tuple(int(n) for n in pins["numcodecs"].split(".")[:2])
    assert zarr_major == 3 and codecs >= (0, 14) or zarr_major == 2 and codecs < (0, 16), pins


def test_the_module_to_distribution_names_are_real() -> None:
    """Each needed distribution is installed under that name here (so the mapping above names real packages)."""
    for name in runtime_needs():
        importlib.metadata.version(name)  # raises PackageNotFoundError for a wrong name


def test_metadata_pins_are_exact_versions_and_requirements_txt_has_the_same_packages() -> None:
    """metadata.json pins exact versions that exist for Python 3.10 too (the zoo's CI Python); requirements.txt pins
    the same packages at the versions tested here (which may be newer)."""
    pins = declared()
    assert all(re.fullmatch(r"\d+(\.\d+)*", version) for version in pins.values()), pins
    required = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split(";")[0].split("==")  # a line may end in an environment marker
            required[_normalize(name)] = version.strip()
    assert set(pins) <= set(required), f"in metadata.json but not requirements.txt: {set(pins) - set(required)}"


def test_metadata_requirements_prints_the_zoo_requirements_list(tmp_path: Path) -> None:
    from bundle.cli import metadata_requirements

    lines = metadata_requirements().splitlines()
    assert lines[:3] == [f"monai=={META['monai_version']}", f"torch=={META['pytorch_version']}",
                         f"numpy=={META['numpy_version']}"]  # fmt: skip
    assert lines[3:] == [f"{name}=={version}" for name, version in META["required_packages_version"].items()]
    meta = {"monai_version": "1.6.1", "required_packages_version": {"a": ">=2", "b": " 1.0 "}}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    result = metadata_requirements(str(tmp_path / "metadata.json"), output=str(tmp_path / "req.txt"))
    assert result.splitlines() == ["monai==1.6.1", "a>=2", "b==1.0"]  # an operator is kept, as the zoo keeps it
    assert (tmp_path / "req.txt").read_text() == result + "\n"
    cli = run_cli("-m", "bundle", "metadata_requirements")
    assert cli.returncode == 0 and cli.stdout.strip().splitlines() == lines


@pytest.mark.parametrize("module", ["skimage", "yaml", "ignite"])
def test_modules_with_other_distribution_names(module: str) -> None:
    assert distribution(module) in declared()
