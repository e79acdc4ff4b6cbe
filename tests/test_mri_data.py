"""MRI readers, case checks, tree scans and datalists: every bad input named with its fault, all at once."""

from __future__ import annotations

import shutil
from collections import defaultdict

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel import orientations as ornt
from PIL import Image

from spine_monai.data.datalist import resolve_paths
from spine_monai.data.mri import (
    MIDAS_LABELS,
    build_mri_datalist,
    check_case,
    read_volume,
    sagittal_axis,
    scan_mri_tree,
)
from spine_monai.errors import DataError
from spine_monai.synthetic.mri import sagittal_affine, write_dicom_series, write_mri_dataset

TINY = (6, 48, 48)


def _series(orientation="PIR", seed=0):
    shape, affine = sagittal_affine(TINY, orientation, tilt=4.0, yaw=-2.0, centre=(3.0, -40.0, 12.0))
    rng = np.random.default_rng(seed)
    array = rng.integers(-500, 3000, size=shape).astype(np.int16)
    return array, affine


def _canonical(array, affine):
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(("R", "A", "S")))
    return ornt.apply_orientation(array, transform), affine @ ornt.inv_ornt_aff(transform, array.shape)


# --------------------------------------------------------------------------------------------------
# DICOM


def test_dicom_series_matches_nibabel_on_the_same_volume(tmp_path):
    array, affine = _series()
    files = write_dicom_series(array, affine, tmp_path / "T1w", series_seed=1, SeriesDescription="T1w")
    assert len(files) == 6
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "MR" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert float(ds.RescaleIntercept) < 0  # negative values go through the modality LUT
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "T1w.nii.gz")
    ref = nib.load(tmp_path / "T1w.nii.gz")
    arr, aff = read_volume(tmp_path / "T1w")
    assert arr.dtype == np.float32 and arr.shape == (48, 48, 6)  # (columns, rows, slices)
    np.testing.assert_array_equal(arr, ref.get_fdata())
    np.testing.assert_allclose(aff, ref.affine, atol=1e-4)
    nifti, nifti_aff = read_volume(tmp_path / "T1w.nii.gz")
    np.testing.assert_array_equal(arr, nifti)
    np.testing.assert_allclose(aff, nifti_aff, atol=1e-4)
    # Extensionless files, in any order on disk, read the same.
    for p in files:
        p.rename(p.with_name(f"IM{9 - int(p.stem)}"))
    arr2, aff2 = read_volume(tmp_path / "T1w")
    np.testing.assert_array_equal(arr2, arr)
    np.testing.assert_allclose(aff2, aff, atol=1e-9)


def test_dicom_with_slices_against_the_normal_reads_in_normal_order(tmp_path):
    array, affine = _series(orientation="PIL")
    write_dicom_series(array, affine, tmp_path / "s", series_seed=2)
    arr, aff = read_volume(tmp_path / "s")
    assert nib.aff2axcodes(aff) == ("P", "I", "R") and sagittal_axis(aff) == 2
    a, a_aff = _canonical(arr, aff)
    b, b_aff = _canonical(array.astype(np.float32), affine)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a_aff, b_aff, atol=1e-4)


def test_dicom_missing_duplicate_and_mixed_series(tmp_path):
    array, affine = _series()
    files = write_dicom_series(array, affine, tmp_path / "gap", series_seed=3)
    files[3].unlink()
    with pytest.raises(DataError) as e:
        read_volume(tmp_path / "gap")
    assert e.value.path == str(tmp_path / "gap")
    assert "missing slice: gap of 16.00 mm between slices at" in e.value.reason
    assert "(after 0003.dcm, slice 3 of 5; median spacing 8.00 mm)" in e.value.reason

    files = write_dicom_series(array, affine, tmp_path / "dup", series_seed=4)
    shutil.copy(files[2], tmp_path / "dup" / "copy.dcm")
    with pytest.raises(DataError, match=r"duplicate slice position: 0003.dcm and copy.dcm are both at"):
        read_volume(tmp_path / "dup")

    write_dicom_series(array, affine, tmp_path / "mixed", series_seed=5)
    other = write_dicom_series(array, affine, tmp_path / "other", series_seed=6)
    shutil.copy(other[0], tmp_path / "mixed" / "stray.dcm")
    with pytest.raises(DataError) as e:
        read_volume(tmp_path / "mixed")
    assert e.value.path == str(tmp_path / "mixed")
    assert e.value.reason == "mixed series: 2 series UIDs in folder; keep one series per channel folder"

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty DICOM folder: no .dcm or extensionless files"):
        read_volume(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "0001.dcm").write_bytes(b"not dicom")
    with pytest.raises(DataError, match=r"junk/0001.dcm: not a readable DICOM file"):
        read_volume(tmp_path / "junk")


# --------------------------------------------------------------------------------------------------
# 2D slices and bad files


def test_png_slices_8_and_16_bit(tmp_path):
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)  # (H, W)
    Image.fromarray(grey16).save(tmp_path / "T1w.png")
    arr, aff = read_volume(tmp_path / "T1w.png")
    assert arr.shape == (4, 3, 1)  # (W, H, 1)
    np.testing.assert_array_equal(arr[:, :, 0], grey16.T)
    assert arr.max() == 55000
    assert nib.aff2axcodes(aff) == ("P", "I", "R")
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), [1, 1, 1])
    grey8 = np.array([[0, 7], [250, 3]], np.uint8)
    Image.fromarray(grey8).save(tmp_path / "label.png")
    Image.fromarray(grey16).save(tmp_path / "T2w.tif")
    np.testing.assert_array_equal(read_volume(tmp_path / "label.png")[0][:, :, 0], grey8.T)
    np.testing.assert_array_equal(read_volume(tmp_path / "T2w.tif")[0][:, :, 0], grey16.T)
    Image.fromarray(np.full((4, 4, 3), [1, 2, 3], np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb.png: colour image \(mode RGB\): expected an 8 or 16-bit grey slice"):
        read_volume(tmp_path / "rgb.png")


def _nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), path)
    return path


def test_read_volume_names_each_fault(tmp_path):
    cases = {}
    with pytest.raises(DataError) as e:
        read_volume(tmp_path / "nowhere.nii.gz")
    cases["missing"] = e.value
    good = _nifti(tmp_path / "good.nii.gz", np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    data = good.read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    _nifti(tmp_path / "4d.nii.gz", np.ones((2, 3, 4, 3), np.float32))
    nan = np.ones((2, 3, 4), np.float32)
    nan[0, 0, :2] = np.nan
    _nifti(tmp_path / "nan.nii.gz", nan)
    inf = np.ones((2, 3, 4), np.float32)
    inf[1, 2, 3] = np.inf
    inf[0, 1, 1] = -np.inf
    _nifti(tmp_path / "inf.nii.gz", inf)
    _nifti(tmp_path / "flat.nii.gz", np.full((2, 3, 4), 5, np.int16))
    _nifti(tmp_path / "zero.nii.gz", np.zeros((2, 0, 4), np.int16))
    (tmp_path / "notes.txt").write_text("hello")
    expected = {
        "nowhere.nii.gz": "file not found",
        "truncated.nii.gz": "unreadable or corrupt NIfTI file",
        "garbage.nii.gz": "unreadable or corrupt NIfTI file",
        "4d.nii.gz": "4D NIfTI with 3 volumes (shape (2, 3, 4, 3)): expected one 3D volume per channel file",
        "nan.nii.gz": "contains 2 NaN/inf voxels",
        "inf.nii.gz": "contains 2 NaN/inf voxels",
        "flat.nii.gz": "empty volume: all 24 voxels equal 5",
        "zero.nii.gz": "empty volume: zero size (shape (2, 0, 4))",
        "notes.txt": "unsupported file type: expected .nii.gz, .nii, a DICOM folder, .dcm, .png or .tif",
    }
    for name, reason in expected.items():
        with pytest.raises(DataError) as e:
            read_volume(tmp_path / name)
        assert e.value.path == str(tmp_path / name)
        assert e.value.reason.startswith(reason), (name, e.value.reason)
    arr, aff = read_volume(good)
    assert arr.dtype == np.float32 and arr.shape == (2, 3, 4) and aff.shape == (4, 4)
    _nifti(tmp_path / "one.nii.gz", np.arange(6, dtype=np.int16).reshape(2, 3))
    assert read_volume(tmp_path / "one.nii.gz")[0].shape == (2, 3, 1)


def test_check_case_reports_every_problem_of_a_case(tmp_path):
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    image = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    t1 = _nifti(tmp_path / "T1w.nii.gz", image, affine)
    shifted = affine.copy()
    shifted[1, 3] += 0.5
    t2 = _nifti(tmp_path / "T2w.nii.gz", image[:, :, :4], shifted)
    label = np.zeros((3, 4, 5), np.float32)
    label[0, 0, :3] = [1.5, 12, 40]
    lab = _nifti(tmp_path / "label.nii.gz", label, affine @ np.diag([1, 1, 1.0005, 1]))
    problems = check_case({"T1w": t1, "T2w": t2}, lab, MIDAS_LABELS)
    assert [(p.path, p.reason) for p in problems] == [
        (str(t2), "channel T2w shape (3, 4, 4) differs from channel T1w shape (3, 4, 5)"),
        (str(t2), "channel T2w affine differs from channel T1w affine (max difference 0.5 mm; tolerance 0.001 mm)"),
        (str(lab), "label affine differs from image (T1w) affine (max difference 0.002 mm; tolerance 0.001 mm)"),
        (str(lab), "label has non-integer values (1.5): expected integer class ids"),
        (str(lab), "label values {12, 40} are not in the label map (allowed ids: 0-11)"),
    ]
    assert check_case({"T1w": t1}, _nifti(tmp_path / "ok.nii.gz", (image % 12).astype(np.uint8), affine)) == []


# --------------------------------------------------------------------------------------------------
# tree scans and datalists


@pytest.fixture(scope="module")
def mri_tiny(tmp_path_factory):
    """Twelve tiny NIfTI cases (one with DICOM channels) to copy and damage."""
    root = tmp_path_factory.mktemp("mri_tiny") / "data"
    write_mri_dataset(root, cases=12, seed=2, shape=TINY, dicom_cases=1, workers=1)
    return root


def _damage(root):
    """Break ten cases in ten ways and add folders that are not cases; leave two good cases and one valid variant."""

    def load(case, name):
        img = nib.load(root / case / name)
        return np.asarray(img.dataobj), img.affine

    label, affine = load("case_001", "label.nii.gz")
    _nifti(root / "case_001/label.nii.gz", label[:, :, :-1], affine)
    label, affine = load("case_002", "label.nii.gz")
    moved = affine.copy()
    moved[2, 3] += 2.0
    _nifti(root / "case_002/label.nii.gz", label, moved)
    t1, affine = load("case_003", "T1w.nii.gz")
    t1 = t1.astype(np.float32)
    t1.flat[[5, 50, 500]] = np.nan
    _nifti(root / "case_003/T1w.nii.gz", t1, affine)
    t2, affine = load("case_004", "T2w.nii.gz")
    t2 = t2.astype(np.float32)
    t2.flat[[7, 70]] = np.inf
    _nifti(root / "case_004/T2w.nii.gz", t2, affine)
    label, affine = load("case_005", "label.nii.gz")
    label = label.copy()
    label.flat[[0, 1]] = [12, 99]
    _nifti(root / "case_005/label.nii.gz", label, affine)
    t2, affine = load("case_006", "T2w.nii.gz")
    _nifti(root / "case_006/T2w.nii.gz", np.zeros_like(t2), affine)
    (root / "case_007/T2w.nii.gz").unlink()
    data = (root / "case_008/T1w.nii.gz").read_bytes()
    (root / "case_008/T1w.nii.gz").write_bytes(data[: len(data) // 3])
    # case_009 loses its label: its channels are still there.
    (root / "case_009/label.nii.gz").unlink()
    # case_000 (DICOM channels) loses a slice of T2w.
    (root / "case_000/T2w/0003.dcm").unlink()
    # Valid variant: names in another case.
    (root / "case_010/T1w.nii.gz").rename(root / "case_010/t1w.NII.GZ")
    (root / "case_011/T1w_old.nii.gz").write_bytes(b"")
    (root / "notes").mkdir()
    (root / "notes/readme.txt").write_text("not a case")
    (root / "P100/slice_00").mkdir(parents=True)
    (root / "P100/empty").mkdir()
    for name in ("T1w", "T2w", "label"):
        shutil.copy(root / f"case_011/{name}.nii.gz", root / f"P100/slice_00/{name}.nii.gz")


def test_scan_reports_every_problem_at_once_and_keeps_good_cases(mri_tiny, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(mri_tiny, root)
    _damage(root)
    dl = build_mri_datalist(root, folds=2, workers=2)
    assert sorted(r["case"] for r in dl["training"]) == ["P100/slice_00", "case_010", "case_011"]
    assert next(r for r in dl["training"] if r["case"] == "case_010")["T1w"] == "case_010/t1w.NII.GZ"
    got = [(p["path"].replace(str(root) + "/", ""), p["reason"]) for p in dl["problems"]]
    expected = [
        ("case_000/T2w", "missing slice: gap of 16.00 mm between slices at"),
        ("case_001/label.nii.gz", "label shape (48, 48, 5) differs from image (T1w) shape (48, 48, 6)"),
        ("case_002/label.nii.gz", "label affine differs from image (T1w) affine (max difference 2 mm;"),
        ("case_003/T1w.nii.gz", "contains 3 NaN/inf voxels"),
        ("case_004/T2w.nii.gz", "contains 2 NaN/inf voxels"),
        ("case_005/label.nii.gz", "label values {12, 99} are not in the label map (allowed ids: 0-11)"),
        ("case_006/T2w.nii.gz", f"empty volume: all {48 * 48 * 6} voxels equal 0"),
        ("case_007/T2w", "missing channel T2w: expected T2w.nii.gz, T2w.nii, a T2w/ DICOM folder, T2w.png or T2w.tif"),
        ("case_008/T1w.nii.gz", "unreadable or corrupt NIfTI file"),
        ("case_009", "missing label: the folder holds T1w.nii.gz, T2w.nii.gz but no label file"),
        ("notes", "unknown folder: no label file and no case inside"),
        ("P100/empty", "unknown folder: no label file and no case inside"),
    ]
    for path, reason in expected:
        assert any(p == path and r.startswith(reason) for p, r in got), (path, reason, got)
    assert len(got) == len(expected), got
    assert [(w["path"].replace(str(root) + "/", ""), w["reason"]) for w in dl["warnings"]] == [
        ("case_011/T1w_old.nii.gz", "unexpected image file in a case folder; it is not used")
    ]
    assert dl["counts"] == {"cases": 3, "patients": 3, "volume": 3, "slice": 0}
    assert dl["channels"] == ["T1w", "T2w"] and dl["label_map"] == MIDAS_LABELS

    structure_only = scan_mri_tree(root, verify=False, workers=1)
    assert len(structure_only.records) == 11 and len(structure_only.problems) == 4


def test_empty_and_missing_trees(tmp_path):
    (tmp_path / "empty").mkdir()
    scan = scan_mri_tree(tmp_path / "empty")
    assert [(p.path, p.reason) for p in scan.problems] == [
        (str(tmp_path / "empty"), "empty tree: no case folders with a label file found")
    ]
    assert scan.records == []
    with pytest.raises(DataError, match="dataset root not found or not a folder"):
        scan_mri_tree(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="invalid channel name"):
        scan_mri_tree(tmp_path / "empty", channels=("T1w", "label"))


def test_datalist_folds_keep_a_patients_slices_together(tmp_path):
    root = tmp_path / "slices"
    write_mri_dataset(root, cases=4, seed=9, shape=(4, 48, 48), slice_format="png", workers=1)
    dl = build_mri_datalist(root, channels=("T2w",), folds=2, test_fraction=0.25, seed=1, workers=2)
    assert dl["problems"] == [] and dl["counts"] == {"cases": 16, "patients": 4, "volume": 0, "slice": 16}
    folds = defaultdict(set)
    for r in dl["training"]:
        folds[r["patient"]].add(r["fold"])
        assert r["case"].startswith(r["patient"] + "/slice_") and r["kind"] == "slice"
        assert "T1w" not in r
    assert len(folds) == 3 and all(len(f) == 1 for f in folds.values())
    assert {f for fs in folds.values() for f in fs} == {0, 1}
    assert len({r["patient"] for r in dl["testing"]}) == 1 and len(dl["testing"]) == 4
    for r in resolve_paths(dl["training"] + dl["testing"], ["T2w", "label"], root):
        assert (root / r["T2w"]).is_file()
    for r in dl["training"]:
        assert not r["T2w"].startswith("/") and (root / r["label"]).is_file()


def test_an_all_background_label_is_a_case_a_blank_image_is_not(tmp_path):
    """Real slice sets have slices beyond the anatomy: their labels are all background, and that is valid."""
    root = tmp_path / "slices"
    write_mri_dataset(root, cases=2, seed=9, shape=(4, 48, 48), slice_format="png", workers=1)
    cases = sorted(p for p in root.rglob("label.png"))
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(cases[0])
    Image.fromarray(np.zeros((48, 48), np.uint16)).save(cases[1].with_name("T2w.png"))
    label, _ = read_volume(cases[0], label=True)
    assert not label.any()
    with pytest.raises(DataError, match="empty volume: all 2304 voxels equal 0"):
        read_volume(cases[0])
    dl = build_mri_datalist(root, channels=("T2w",), folds=2, workers=1)
    assert [(p["path"], p["reason"]) for p in dl["problems"]] == [
        (str(cases[1].with_name("T2w.png")), "empty volume: all 2304 voxels equal 0")
    ]
    assert str(cases[0].parent.relative_to(root)) in {r["case"] for r in dl["training"]}


def test_datalist_mri_label_map_option(tmp_path, capsys):
    from spine_monai.cli import main

    root = tmp_path / "vb"
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for k in range(2):
        case = root / f"case{k}"
        case.mkdir(parents=True)
        nib.save(
            nib.Nifti1Image(np.random.default_rng(k).random((8, 8, 3)).astype(np.float32), affine), case / "T1w.nii.gz"
        )
        nib.save(
            nib.Nifti1Image(np.eye(8, dtype=np.uint8)[:, :, None].repeat(3, 2) * 15, affine), case / "label.nii.gz"
        )
    out = tmp_path / "dl.json"
    args = ["datalist", "mri", "--root", str(root), "--out", str(out), "--channels", "T1w", "--folds", "2"]
    assert main(args) == 2  # every case is out under the default 12-class map
    assert "label values {15} are not in the label map" in capsys.readouterr().err
    (tmp_path / "map.json").write_text('{"background": 0, "vertebrae": 15}')
    assert main([*args, "--label-map", str(tmp_path / "map.json")]) == 0
    assert main([*args, "--label-map", '{"background": 0, "vertebrae": 15}']) == 0
    assert main([*args, "--label-map", "{not json"]) == 2
    assert "--label-map '{not json' is neither a JSON object nor a JSON file" in capsys.readouterr().err
