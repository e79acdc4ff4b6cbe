from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt
from PIL import Image

from spine_monai.data.mri import MIDAS_LABELS, read_volume, sagittal_axis, scan_mri_tree
from spine_monai.synthetic.mri import generate_mri_case, sagittal_affine, write_mri_dataset

SMALL = (8, 128, 128)


@pytest.fixture(scope="module")
def mri_root(tmp_path_factory):
    """Three synthetic NIfTI cases at a reduced in-plane size; read-only for tests."""
    root = tmp_path_factory.mktemp("mri") / "data"
    write_mri_dataset(root, cases=3, seed=7, shape=SMALL, workers=1)
    return root


def _canonical(array, affine):
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(("R", "A", "S")))
    return ornt.apply_orientation(array, transform), affine @ ornt.inv_ornt_aff(transform, array.shape)


def test_layout_dtypes_and_shared_geometry(mri_root):
    cases = sorted(p.name for p in mri_root.iterdir())
    assert cases == ["case_000", "case_001", "case_002"]
    for case in cases:
        folder = mri_root / case
        assert sorted(p.name for p in folder.iterdir()) == ["T1w.nii.gz", "T2w.nii.gz", "label.nii.gz"]
        label = nib.load(folder / "label.nii.gz")
        assert label.get_data_dtype() == np.uint8
        for channel in ("T1w", "T2w"):
            img = nib.load(folder / f"{channel}.nii.gz")
            assert img.get_data_dtype() == np.int16
            assert img.shape == label.shape == (128, 128, 8)  # PIR: A-P, S-I, L-R
            np.testing.assert_allclose(img.affine, label.affine, atol=1e-5)
    scan = scan_mri_tree(mri_root, workers=1)
    assert scan.problems == [] and scan.warnings == [] and len(scan.records) == 3


def test_all_classes_present_and_small_structures_small(mri_root):
    for case in ("case_000", "case_001", "case_002"):
        label = np.asarray(nib.load(mri_root / case / "label.nii.gz").dataobj)
        fractions = np.bincount(label.ravel(), minlength=12) / label.size
        assert len(fractions) == 12
        missing = [name for name, i in MIDAS_LABELS.items() if fractions[i] == 0]
        assert missing == [], (case, missing)
        assert 0 < fractions[MIDAS_LABELS["nerve_root"]] < 0.01
        assert 0 < fractions[MIDAS_LABELS["blood_vessels"]] < 0.01


def test_contrasts_are_plausible(mri_root):
    ids = MIDAS_LABELS
    for case in ("case_000", "case_001"):
        label = np.asarray(nib.load(mri_root / case / "label.nii.gz").dataobj)
        t1 = np.asarray(nib.load(mri_root / case / "T1w.nii.gz").dataobj).astype(float)
        t2 = np.asarray(nib.load(mri_root / case / "T2w.nii.gz").dataobj).astype(float)

        def mean(img, name, label=label):
            return img[label == ids[name]].mean()

        assert mean(t1, "subcutaneous_fat") > 3 * mean(t1, "spinal_cavity")  # T1w: fat bright, CSF dark
        assert mean(t1, "vertebrae") > mean(t1, "intervertebral_discs") > mean(t1, "spinal_cavity")
        assert mean(t1, "subcutaneous_fat") > mean(t1, "muscle")
        assert mean(t2, "spinal_cavity") > 3 * mean(t2, "muscle")  # T2w: CSF bright, muscle dark
        assert mean(t2, "spinal_cavity") > mean(t2, "subcutaneous_fat") > mean(t2, "muscle")
        assert mean(t2, "intervertebral_discs") > mean(t2, "muscle")
        # 16-bit-like, unnormalised intensities with Rician noise outside the body.
        assert 2000 < t1.max() < 32767 and t1.min() >= 0
        assert 0 < np.median(t2[label == 0]) < 0.5 * mean(t2, "spinal_cavity")


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_identical_bytes(tmp_path):
    shape = (6, 64, 64)
    write_mri_dataset(tmp_path / "a", cases=2, seed=11, shape=shape, dicom_cases=1, workers=1)
    write_mri_dataset(tmp_path / "b", cases=2, seed=11, shape=shape, dicom_cases=1, workers=2)
    write_mri_dataset(tmp_path / "c", cases=2, seed=12, shape=shape, dicom_cases=1, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_default_case_is_a_real_sagittal_acquisition():
    case = generate_mri_case(seed=0, index=0)
    assert case.label.shape == (224, 224, 12)
    assert nib.aff2axcodes(case.affine) == ("P", "I", "R")
    axis = sagittal_axis(case.affine)
    assert axis == 2 and case.label.shape[axis] == 12
    spacing = np.linalg.norm(case.affine[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [240 / 224, 240 / 224, 4.0])
    # A slightly oblique prescription: the L-R axis is close to, but not exactly, world x.
    direction = case.affine[:3, axis] / spacing[axis]
    assert 0.99 < abs(direction[0]) <= 1.0


def test_orientation_changes_only_the_voxel_order():
    pir = generate_mri_case(seed=1, index=2, shape=(6, 64, 64), channels=("T1w",))
    ras = generate_mri_case(seed=1, index=2, shape=(6, 64, 64), orientation="RAS", channels=("T1w",))
    assert ras.label.shape == (6, 64, 64) and nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    assert sagittal_axis(ras.affine) == 0
    a, a_aff = _canonical(pir.label, pir.affine)
    b, b_aff = _canonical(ras.label, ras.affine)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a_aff, b_aff, atol=1e-9)
    with pytest.raises(ValueError, match="must name each of"):
        sagittal_affine(orientation="PIP")


def test_png_slices(tmp_path):
    shape = (6, 64, 64)
    write_mri_dataset(tmp_path / "png", cases=1, seed=5, shape=shape, slice_format="png", workers=1)
    slices = sorted(p.name for p in (tmp_path / "png" / "case_000").iterdir())
    assert slices == [f"slice_{k:02d}" for k in range(6)]
    case = generate_mri_case(seed=5, index=0, shape=shape)
    assert nib.aff2axcodes(case.affine) == ("P", "I", "R")
    folder = tmp_path / "png" / "case_000" / "slice_03"
    with Image.open(folder / "T2w.png") as img:
        assert img.mode == "I;16" and img.size == (64, 64)
        # On screen: rows superior to inferior, columns anterior to posterior.
        np.testing.assert_array_equal(np.asarray(img), case.images["T2w"][:, :, 3].T)
    with Image.open(folder / "label.png") as img:
        assert img.mode == "L"
    arr, affine = read_volume(folder / "label.png")
    assert arr.shape == (64, 64, 1) and nib.aff2axcodes(affine) == ("P", "I", "R")
    np.testing.assert_array_equal(arr[:, :, 0], case.label[:, :, 3])
    scan = scan_mri_tree(tmp_path / "png", workers=1)
    assert scan.problems == [] and len(scan.records) == 6
    assert {r["kind"] for r in scan.records} == {"slice"} and {r["patient"] for r in scan.records} == {"case_000"}


def test_dicom_cases_read_back_as_their_nifti(tmp_path):
    shape = (6, 64, 64)
    write_mri_dataset(tmp_path / "d", cases=2, seed=3, shape=shape, dicom_cases=1, workers=1)
    folder = tmp_path / "d" / "case_000"
    assert sorted(p.name for p in folder.iterdir()) == ["T1w", "T2w", "label.nii.gz"]
    assert len(list((folder / "T1w").glob("*.dcm"))) == 6
    assert (tmp_path / "d" / "case_001" / "T1w.nii.gz").is_file()
    case = generate_mri_case(seed=3, index=0, shape=shape)
    _, label_affine = read_volume(folder / "label.nii.gz")
    for channel in ("T1w", "T2w"):
        arr, affine = read_volume(folder / channel)
        np.testing.assert_array_equal(arr, case.images[channel])
        np.testing.assert_allclose(affine, label_affine, atol=1e-4)
        np.testing.assert_allclose(affine, case.affine, atol=1e-4)
    assert scan_mri_tree(tmp_path / "d", workers=1).problems == []


def test_refuses_to_overwrite_and_bad_arguments(mri_root, tmp_path):
    with pytest.raises(FileExistsError, match="not empty"):
        write_mri_dataset(mri_root, cases=1)
    with pytest.raises(ValueError, match="slice_format"):
        write_mri_dataset(tmp_path / "x", cases=1, slice_format="jpg")
    with pytest.raises(ValueError, match="orientation"):
        write_mri_dataset(tmp_path / "x", cases=1, orientation="XYZ")
    with pytest.raises(ValueError, match="not both"):
        write_mri_dataset(tmp_path / "x", cases=2, dicom_cases=1, slice_format="png")
