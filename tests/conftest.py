"""Shared fixtures: small synthetic datasets generated once per session and copied where a test edits them."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from monai.data import set_track_meta

from spine_monai.data import build_xray_datalist, write_datalist
from spine_monai.synthetic.xray import write_xray_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def xray_root(tmp_path_factory) -> Path:
    """Eight synthetic patients (4 Normal, 4 Damaged) at the default size; read-only for tests."""
    root = tmp_path_factory.mktemp("xray") / "data"
    write_xray_dataset(root, cases=8, seed=3, workers=1)
    return root


@pytest.fixture(scope="session")
def datalist(xray_root, tmp_path_factory) -> Path:
    """``xray_root``'s datalist: two folds, a quarter of the patients in the testing list (seed 0); read-only."""
    path = tmp_path_factory.mktemp("xray_datalist") / "datalist.json"
    write_datalist(path, build_xray_datalist(xray_root, folds=2, test_fraction=0.25, seed=0))
    return path


@pytest.fixture
def xray_copy(xray_root, tmp_path) -> Path:
    """A private copy of ``xray_root`` that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(xray_root, dst)
    return dst


def write_dx_dicom(
    path: Path,
    pixels,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    view: str = "",
):
    """Write a single-frame DX radiograph with pydicom, as a PACS export would: patient, study and series included."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "synthetic"
    ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Patient", "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20261207", "120000", "", ""
    ds.ViewPosition = view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@contextlib.contextmanager
def raises_in_chain(exc_type: type[BaseException], match: str | None = None):
    """Like ``pytest.raises``, but finds ``exc_type`` anywhere in the cause chain.

    MONAI wraps errors raised inside config expressions and transforms in a ``RuntimeError``; the user sees
    both in the traceback, and the test checks the one that carries the message.
    """
    with pytest.raises(BaseException) as info:
        yield info
    err: BaseException | None = info.value
    while err is not None and not isinstance(err, exc_type):
        err = err.__cause__ or err.__context__
    assert err is not None, f"no {exc_type.__name__} in the chain of {info.value!r}"
    if match is not None:
        assert re.search(match, str(err)), f"{match!r} not in {str(err)!r}"


def small_run_args(config_file: str, dataset_dir: Path, datalist: Path, out: Path, epochs: int, *extra: str):
    """Arguments after ``python -m`` for a small, quiet CPU training run of a bundle through ``monai.bundle run``.

    One film per batch, no worker processes, validation every epoch; ``extra`` overrides are appended.
    """
    return [
        "monai.bundle",
        "run",
        "--config_file",
        config_file,
        "--dataset_dir",
        str(dataset_dir),
        "--datalist",
        str(datalist),
        "--output_dir",
        str(out),
        "--train#trainer#max_epochs",
        str(epochs),
        "--val_interval",
        "1",
        "--batch_size",
        "1",
        "--num_workers",
        "0",
        "--progress_bar",
        "False",
        *extra,
    ]


def _snapshot(value):
    """A comparable copy of a cached item: tensors with their metadata and trace of transforms."""
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_snapshot(v) for v in value]
    if isinstance(value, torch.Tensor):
        meta = getattr(value, "meta", None)
        ops = getattr(value, "applied_operations", None)
        return ("tensor", value.detach().clone().as_subclass(torch.Tensor), repr(meta), repr(ops))
    return ("value", repr(value))


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a[0] == "tensor":
        return torch.equal(a[1], b[1]) and a[2:] == b[2:]
    return a == b


def assert_training_cache_untouched(parser, draws: int = 3) -> None:
    """The training set is cached without ``copy_cache`` (no per-sample deep copy): its random transforms must
    leave the cache as it was. Draw every item ``draws`` times, with metadata tracked (the main process, as with
    ``num_workers=0``) and untracked (as in the DataLoader workers), and compare the cache with a snapshot."""
    dataset = parser.get_parsed_content("train#dataset")
    assert dataset.copy_cache is False, "the guard is only needed (and meaningful) without copy_cache"
    before = _snapshot(dataset._cache)
    for track in (True, False):
        set_track_meta(track)
        try:
            for _ in range(draws):
                for i in range(len(dataset)):
                    dataset[i]
        finally:
            set_track_meta(True)
    assert _same(before, _snapshot(dataset._cache)), "a random training transform changed the cached data in place"


def spine_corners(tilts_deg, x0=60.0, top=20.0, height=26.0, gap=12.0, width=44.0, bend=None):
    """(n, 4, 2) clockwise corners of rectangular bodies stacked down a film, as landmark sets annotate them: body
    i tilted by ``tilts_deg[i]`` degrees and shifted sideways by ``bend[i]`` px."""
    import math

    import numpy as np

    out = []
    for i, t in enumerate(np.radians(tilts_deg)):
        centre = np.array([x0 + (0.0 if bend is None else bend[i]), top + height / 2 + i * (height + gap)])
        u = np.array([math.cos(t), -math.sin(t)])
        v = np.array([math.sin(t), math.cos(t)])
        out.append(
            [centre + sx * width / 2 * u + sy * height / 2 * v for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        )
    return np.array(out)


def write_film(path: Path, size: tuple[int, int]) -> None:
    """A grey noise film of ``size`` (width, height), as JPEG or PNG by the suffix."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(path)


def aasce_row(corners, size: tuple[int, int]) -> list[float]:
    """One row of AASCE's landmarks.csv: per body top-left, top-right, bottom-left, bottom-right, normalised; all x
    values, then all y values."""
    pts = corners[:, [0, 1, 3, 2]].reshape(-1, 2)
    return [*(pts[:, 0] / size[0]), *(pts[:, 1] / size[1])]


def run_cli(**args) -> None:
    """``python -m monai.bundle run --<key> <value> ...`` in this process, the command line given as a user types it.

    The overrides reach the bundle through ``sys.argv``, as from a shell, so that the bundle's override check sees
    them; values are written as Fire reads them back (lists and numbers as Python literals).
    """
    import json
    import runpy
    import sys

    import monai.bundle

    argv = [str(Path(monai.bundle.__file__).with_name("__main__.py")), "run"]
    for key, value in args.items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_module("monai.bundle", run_name="__main__")
    finally:
        sys.argv = saved
