"""The public-data recipe for FastCleverSeg's MATLAB volumes, and the real-data benchmark's scoring, on replicas."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import aasce_row, spine_corners, write_film
from scipy.io import savemat

from pipelines import recipe_fastcleverseg
from pipelines.bench_real import cobb_from_corners, score_cobb, score_dice
from spine_monai.data import build_mri_datalist, write_mask
from spine_monai.data.landmarks import import_landmarks, read_aasce
from spine_monai.measure.cobb import REGIONAL_COBB
from spine_monai.transforms import LoadVolumed


def _mat(path, image_shape=(40, 30, 6), label_shape=None, ids=(1, 2, 3), seed=0):
    """A FastCleverSeg-like .mat: ``I`` a volume, ``GT`` bodies numbered 1..n stacked down the rows."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, image_shape).astype(np.uint8)
    labels = np.zeros(label_shape or image_shape, np.uint8)
    for k, i in enumerate(ids):
        labels[4 + 10 * k : 10 + 10 * k, 8:20, 1:5] = i
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"I": image, "GT": labels})
    return image, labels


@pytest.fixture
def image_datasets(tmp_path):
    src = tmp_path / "ImageDatasets"
    _mat(src / "VBs/VB1/Isotropic/Matlab/01.mat")
    _mat(src / "VBs/VB2/Isotropic/Matlab/02.mat", label_shape=(40, 30, 7))
    _mat(src / "VBs/VB2/Isotropic/Matlab/03.mat", seed=3)
    _mat(src / "IVD/Isotropic/Matlab/11.mat", ids=(1, 2))
    (src / "VBs/VB2/Isotropic/Matlab/04.mat").write_bytes(b"not matlab")
    return src


def test_recipe_writes_cases_with_a_sagittal_affine_and_names_bad_volumes(image_datasets, tmp_path, capsys):
    out = tmp_path / "mri"
    assert recipe_fastcleverseg.main(["--src", str(image_datasets), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "VB2/Isotropic/Matlab/02.mat: volume I is (40, 30, 6) but labels GT are (40, 30, 7)" in err
    assert "VB2/Isotropic/Matlab/04.mat: not a readable MATLAB file" in err
    assert sorted(p.name for p in (out / "vertebrae").iterdir() if p.is_dir()) == ["VB1-01", "VB2-03"]
    assert json.loads((out / "vertebrae" / "label_map.json").read_text()) == {"background": 0, "vertebrae": 1}
    assert json.loads((out / "discs" / "label_map.json").read_text()) == {"background": 0, "intervertebral_discs": 1}

    img = nib.load(out / "vertebrae" / "VB1-01" / "T1w.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("I", "P", "R") and img.header.get_zooms() == (1.0, 1.0, 1.0)
    label = np.asarray(nib.load(out / "vertebrae" / "VB1-01" / "label.nii.gz").dataobj)
    assert set(np.unique(label)) == {0, 1} and label.sum() == 3 * 6 * 12 * 4

    # The bundle's loader and Orientationd("PIR") give sagittal slices: rows down towards inferior.
    d = LoadVolumed(
        ["T1w", "label"], reference_key="T1w", label_key="label", label_map={"background": 0, "vertebrae": 1}
    )(
        {
            "T1w": str(out / "vertebrae" / "VB1-01" / "T1w.nii.gz"),
            "label": str(out / "vertebrae" / "VB1-01" / "label.nii.gz"),
        }
    )
    from monai.transforms import Orientationd

    pir = Orientationd(["T1w", "label"], axcodes="PIR")(d)
    assert tuple(pir["label"].shape) == (1, 30, 40, 6)
    np.testing.assert_array_equal(pir["label"][0, :, :, 2].numpy().T, label[:, :, 2])

    dl = build_mri_datalist(
        out / "vertebrae", channels=("T1w",), folds=2, label_map={"background": 0, "vertebrae": 1}, workers=1
    )
    assert dl["problems"] == [] and len(dl["training"]) == 2


def test_recipe_refuses_the_reserved_set(image_datasets, tmp_path, capsys):
    assert recipe_fastcleverseg.main(["--src", str(image_datasets), "--out", str(tmp_path / "o"), "--sets", "VB3"]) == 2
    assert "VB3 is reserved for the project's independent check" in capsys.readouterr().err


def _aasce_films(tmp_path, n=3):
    src = tmp_path / "boostnet_labeldata"
    rows, names = [], []
    for k in range(n):
        tilts = np.interp(np.arange(17), [0, 5, 16], [0, 8 + 4 * k, -6])
        corners = spine_corners(
            tilts, x0=150.0, height=30.0, gap=10.0, width=60.0, bend=20 * np.sin(np.linspace(0, np.pi, 17))
        )
        names.append(f"f{k} AP.jpg")
        write_film(src / "data" / "test" / names[-1], (300, 720))
        rows.append(aasce_row(corners, (300, 720)))
    (src / "labels" / "test").mkdir(parents=True)
    (src / "labels" / "test" / "filenames.csv").write_text("".join(f"{x}\n" for x in names))
    np.savetxt(src / "labels" / "test" / "landmarks.csv", rows, delimiter=",")
    np.savetxt(src / "labels" / "test" / "angles.csv", [[10.0, 5.0, 5.0]] * n, delimiter=",")
    films, problems = read_aasce(src, "test")
    root = tmp_path / "test_set"
    import_landmarks(films, root, problems=problems)
    return root


def test_bench_real_scores_masks_and_angles_with_one_function(tmp_path):
    root = _aasce_films(tmp_path)
    truth = json.loads((root / "landmarks.json").read_text())
    patients = list(truth["cases"])
    # A prediction tree: the truth for the first film, an empty mask for the second, nothing for the third.
    pred = tmp_path / "pred"
    first = root / patients[0] / "AP" / "Ap_Vertebra.png"
    (pred / patients[0] / "AP").mkdir(parents=True)
    (pred / patients[0] / "AP" / "Ap_Vertebra.png").write_bytes(first.read_bytes())
    write_mask(pred / patients[1] / "AP" / "Ap_Vertebra.png", np.zeros((720, 300), bool))
    dice = score_dice(pred, root, patients)
    assert dice.tolist() == [1.0, 0.0, 0.0]

    cobb = score_cobb(pred, truth, tmp_path / "m" / "measure.csv")
    assert cobb["films"] == 3 and cobb["unmeasured"] == 2 and cobb["films_with_17_bodies"] == 1
    # The first film's 17 bodies are found and named; the other two films' 34 are not.
    assert cobb["bodies_found_pct"] == pytest.approx(100 / 3, abs=0.1)
    assert cobb["levels_named_pct"] == pytest.approx(100 / 3, abs=0.1) and cobb["corner_error_median_px"] < 1.5
    corners = cobb_from_corners(truth)
    assert corners["films"] == 3 and set(corners["mae_deg_by_angle"]) == set(REGIONAL_COBB)
    # The unmeasured films count with angles of 0: a 100 % error each.
    assert cobb["smape_pct"] >= 2 * 100 / 3
