"""Each packaged bundle runs from its zip in a fresh virtual environment, installed as its docs say.

The docs' two install lines are a torch build, then ``spine-monai``; here the spine-monai wheel is built from this
checkout (not installed in editable mode, so only what the wheel holds is there) and its dependencies come from the
package index, as they would for a clinical group. The bundles then run outside the repository, with nothing of this
checkout on the path. Installing takes about a minute. ``SPINE_MONAI_SKIP_FRESH_INSTALL=1`` skips the module on a
machine without a package index; CI runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO

from spine_monai.package import package_bundle
from spine_monai.synthetic.mri import write_mri_dataset
from spine_monai.workflow import read_bundle_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("SPINE_MONAI_SKIP_FRESH_INSTALL") == "1", reason="SPINE_MONAI_SKIP_FRESH_INSTALL=1"
    ),
]

# The build this suite runs on, unless the Makefile passes its TORCH_SPEC: another spec could pull CUDA wheels.
TORCH_SPEC = os.environ.get("TORCH_SPEC") or f"torch=={torch.__version__.split('+')[0]}"


def _clean_env() -> dict[str, str]:
    """This process's environment without what points at this checkout or its virtual environment."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _check(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), **kwargs)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory):
    """A new virtual environment with only the torch build and the spine-monai wheel (and what it requires)."""
    base = tmp_path_factory.mktemp("fresh")
    # Built from a copy of what the wheel is made of: setuptools writes build/ beside its sources, and a build/
    # left from an earlier build would carry modules since deleted into the wheel.
    source = base / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for package in ("spine_monai", "pipelines"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(source), "-w", str(base)]
    _check(pip_wheel, "building the spine-monai wheel", timeout=300)
    wheel = next(base.glob("spine_monai-*.whl"))
    # The studies of a checkout stay out of the wheel: the installed package must not need them.
    with zipfile.ZipFile(wheel) as zf:
        assert not [n for n in zf.namelist() if n.startswith("pipelines/")], "pipelines/ is in the wheel"
    venv = base / "venv"
    _check([sys.executable, "-m", "venv", str(venv)], "creating the virtual environment", timeout=300)
    python = venv / "bin" / "python"
    _check([str(python), "-m", "pip", "install", "--quiet", TORCH_SPEC], f"pip install {TORCH_SPEC}", timeout=900)
    _check([str(python), "-m", "pip", "install", "--quiet", str(wheel)], f"pip install {wheel.name}", timeout=900)
    yield python
    shutil.rmtree(venv, ignore_errors=True)  # ~1.5 GB; pytest keeps its last three temporary folders


def _unzipped(bundle: str, tmp_path: Path) -> Path:
    """The bundle packaged with random weights by ``spine-monai package``, unzipped outside the repository."""
    bundle_dir = REPO / "bundles" / bundle
    parser = read_bundle_config(str(bundle_dir / "configs" / "inference.json"))
    torch.manual_seed(0)
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, tmp_path / "ckpt.pt")
    zip_path = package_bundle(bundle_dir, tmp_path / "dist", ckpt=tmp_path / "ckpt.pt")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "elsewhere")
    return tmp_path / "elsewhere" / bundle


@pytest.fixture
def two_patients(xray_root, tmp_path) -> Path:
    """One Normal and one Damaged patient of the session's synthetic X-ray set, in the ELL888 layout."""
    root = tmp_path / "xray"
    for patient in ("Normal/ID (1)", "Damaged/ID (1)"):
        shutil.copytree(xray_root / patient, root / patient)
    return root


def test_fresh_environment_has_every_declared_package(fresh_python):
    """Installing spine-monai brings every package the bundles declare in ``required_packages_version``."""
    declared = set()
    for meta in (REPO / "bundles").glob("*/configs/metadata.json"):
        declared |= set(json.loads(meta.read_text())["required_packages_version"])
    script = (
        "import importlib.metadata as m, sys\n"
        "missing = []\n"
        "for name in sys.argv[1:]:\n"
        "    try: m.version(name)\n"
        "    except m.PackageNotFoundError: missing.append(name)\n"
        "print(missing)\n"
    )
    elsewhere = fresh_python.parents[1]  # not this checkout, which `python -c` would put on the path
    proc = _check([str(fresh_python), "-c", script, *sorted(declared)], "listing the packages", cwd=elsewhere)
    assert proc.stdout.strip() == "[]", f"declared by a bundle but not installed by spine-monai: {proc.stdout}"
    # nothing of the checkout is importable from there but the installed wheel
    proc = _check([str(fresh_python), "-c", "import spine_monai; print(spine_monai.__file__)"], "import", cwd=elsewhere)
    assert str(REPO) not in proc.stdout and "site-packages" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("bundle", "data", "overrides", "expected"),
    [
        ("spine_xray_ap_seg", "xray", [], "predictions/Damaged/ID (1)/AP/Ap_Vertebra.png"),
        ("spine_xray_lat_seg", "xray", [], "predictions/Normal/ID (1)/LAT/Lat_Posterior_Vertebral_Line.png"),
        ("spine_xray_cls", "xray", ["--spatial_size", "[192, 128]"], "predictions.csv"),
        (
            "spine_mri_seg",
            "mri",
            ["--in_plane_spacing", "[3.0, 3.0]", "--patch_size", "[96, 96]"],
            "predictions/case_000/label.nii.gz",
        ),
    ],
)
def test_packaged_bundle_runs_in_a_fresh_environment(
    fresh_python, two_patients, tmp_path, bundle, data, overrides, expected
):
    bundle_root = _unzipped(bundle, tmp_path)
    if data == "mri":
        dataset_dir = tmp_path / "mri"
        write_mri_dataset(dataset_dir, cases=2, seed=1, shape=(6, 96, 96), dicom_cases=1, workers=1)
    else:
        dataset_dir = two_patients
    out = tmp_path / "out"
    cmd = [str(fresh_python), "-m", "monai.bundle", "run", "--config_file", str(bundle_root / "configs/inference.json")]
    cmd += ["--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir), "--output_dir", str(out)]
    cmd += ["--num_workers", "0", *overrides]
    proc = _check(cmd, f"{bundle}'s inference.json", cwd=bundle_root.parent, timeout=600)
    assert f"elsewhere/{bundle}/models/model.pt" in proc.stdout + proc.stderr  # the packaged weights
    assert (out / expected).is_file(), sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())[:20]
