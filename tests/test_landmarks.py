"""Vertebra-corner importers (AASCE CSV, COCO keypoints), and the AASCE regional Cobb angles and SMAPE."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import aasce_row as _aasce_row
from conftest import spine_corners as _spine
from conftest import write_film as _film

from spine_monai.cli import main
from spine_monai.data import build_xray_datalist, read_mask
from spine_monai.data.landmarks import AASCE_LEVELS, quadrilateral_problem, vertebra_mask
from spine_monai.measure import measure_tree
from spine_monai.measure.cobb import cobb_smape, regional_cobb_angles

W, H = 120, 700


@pytest.fixture
def aasce_src(tmp_path):
    """An AASCE-format replica: two good films, a bow-tie, a point off the film and a missing image."""
    src = tmp_path / "boostnet_labeldata"
    good = _spine(np.linspace(-8, 8, 17))
    bowtie = good.copy()
    bowtie[3] = bowtie[3][[1, 0, 2, 3]]
    outside = good.copy()
    outside[16, 2, 1] = H + 30
    films = {
        "a AP.jpg": good,
        "b AP.jpg": _spine(np.zeros(17), x0=55.0),
        "bowtie AP.jpg": bowtie,
        "outside AP.jpg": outside,
        "missing AP.jpg": good,
    }
    for name in films:
        if name != "missing AP.jpg":
            _film(src / "data" / "training" / name, (W, H))
    labels = src / "labels" / "training"
    labels.mkdir(parents=True)
    (labels / "filenames.csv").write_text("".join(f"{n}\n" for n in films))
    np.savetxt(labels / "landmarks.csv", [_aasce_row(c, (W, H)) for c in films.values()], delimiter=",")
    np.savetxt(labels / "angles.csv", [[16.0, 4.0, 5.0]] * len(films), delimiter=",")
    return src, films


def test_aasce_import_writes_the_layout_masks_sidecar_and_names_every_bad_film(aasce_src, tmp_path, capsys):
    src, films = aasce_src
    out = tmp_path / "aasce"
    assert main(["import", "landmarks", "--format", "aasce", "--src", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "bowtie AP.jpg: T4: self-intersecting quadrilateral" in err
    assert "outside AP.jpg: L5: points outside the 120x700 image: inferior-right" in err
    assert "missing AP.jpg: image not found" in err

    doc = json.loads((out / "landmarks.json").read_text())
    assert sorted(doc["cases"]) == ["Normal/ID (1)", "Normal/ID (2)"]
    assert len(doc["problems"]) == 3
    case = doc["cases"]["Normal/ID (1)"]
    assert case["source"] == "a AP.jpg" and case["levels"] == list(AASCE_LEVELS)
    assert case["AP"]["cobb_angles"] == {"proximal_thoracic": 16.0, "main_thoracic": 4.0, "thoracolumbar_lumbar": 5.0}
    corners = np.array([v["corners"] for v in case["AP"]["vertebrae"]])
    np.testing.assert_allclose(corners, films["a AP.jpg"], atol=0.01)

    view = out / "Normal" / "ID (1)" / "AP"
    assert (view / "AP.jpg").read_bytes() == (src / "data" / "training" / "a AP.jpg").read_bytes()
    mask = read_mask(view / "Ap_Vertebra.png", expected_size=(W, H))
    np.testing.assert_array_equal(mask, vertebra_mask(films["a AP.jpg"], (W, H)))
    # 17 bodies of 44x26 px, their rasterised edges included
    assert 17 * 44 * 26 <= mask.sum() <= 17 * 47 * 29

    dl = build_xray_datalist(out, folds=2, views=("AP",), structures=("Ap_Vertebra",))
    assert len(dl["training"]) == 2 and dl["problems"] == [] and dl["warnings"] == []


def test_aasce_import_allow_incomplete_and_refuses_a_used_folder(aasce_src, tmp_path):
    src, _ = aasce_src
    out = tmp_path / "aasce"
    args = ["import", "landmarks", "--format", "aasce", "--src", str(src), "--out", str(out)]
    assert main([*args, "--allow-incomplete"]) == 0
    assert main(args) == 2  # not empty any more


def test_aasce_label_files_that_disagree_are_an_error(aasce_src, tmp_path, capsys):
    src, _ = aasce_src
    (src / "labels" / "training" / "filenames.csv").write_text("a AP.jpg\n")
    assert main(["import", "landmarks", "--format", "aasce", "--src", str(src), "--out", str(tmp_path / "o")]) == 2
    assert "landmarks.csv: expected 1 rows" in capsys.readouterr().err


def _coco(tmp_path, films: dict[str, np.ndarray], anterior="left", drop=None):
    """A COCO keypoints replica with lateral names <level><T|B><F|B>; ``drop`` = (film, level, name) unlabelled."""
    levels = [f"L{i}" for i in range(1, 6)]
    names = [f"{lv}{e}{c}" for lv in levels for e in "TB" for c in "BF"]
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "spine", "keypoints": names}]}
    for k, (file_name, corners) in enumerate(films.items(), start=1):
        doc["images"].append({"id": k, "file_name": file_name, "width": W, "height": 260})
        if file_name != "ghost.png":
            _film(tmp_path / "images" / file_name, (W, 260))
        kps = []
        for i, lv in enumerate(levels):
            sl, sr, ir, il = corners[i]
            front = (
                {"TF": sl, "TB": sr, "BF": il, "BB": ir}
                if anterior == "left"
                else {"TF": sr, "TB": sl, "BF": ir, "BB": il}
            )
            for e in "TB":
                for c in "BF":
                    x, y = front[e + c]
                    visible = 0 if drop == (file_name, lv, f"{lv}{e}{c}") else 2
                    kps += [float(x), float(y), visible]
        doc["annotations"].append({"id": k, "image_id": k, "category_id": 1, "keypoints": kps})
    path = tmp_path / "images" / "keypoints.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("anterior", ["left", "right"])
def test_coco_keypoints_import_orders_named_corners_by_the_side_the_patient_faces(tmp_path, anterior):
    corners = _spine(np.zeros(5), top=10.0, height=30.0, gap=14.0)
    path = _coco(tmp_path, {"p1.png": corners}, anterior=anterior)
    out = tmp_path / "lat"
    assert main(["import", "landmarks", "--format", "coco-keypoints", "--src", str(path), "--out", str(out)]) == 0
    doc = json.loads((out / "landmarks.json").read_text())
    case = doc["cases"]["Normal/ID (1)"]
    assert case["levels"] == ["L1", "L2", "L3", "L4", "L5"]
    assert case["LAT"]["anterior_side"] == anterior
    got = np.array([v["corners"] for v in case["LAT"]["vertebrae"]])
    np.testing.assert_allclose(got, corners, atol=0.01)
    assert (out / "Normal" / "ID (1)" / "LAT" / "LAT.png").is_file()
    assert read_mask(out / "Normal" / "ID (1)" / "LAT" / "Lat_Vertebra.png").any()


def test_coco_keypoints_bad_annotations_are_named_and_the_rest_imported(tmp_path, capsys):
    good = _spine(np.zeros(5), top=10.0, height=30.0, gap=14.0)
    path = _coco(
        tmp_path,
        {"ok.png": good, "partial.png": good, "ghost.png": good},
        drop=("partial.png", "L3", "L3BF"),
    )
    out = tmp_path / "lat"
    assert main(["import", "landmarks", "--format", "coco-keypoints", "--src", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "partial.png: L3: missing corners: inferior-left" in err
    assert "ghost.png: image not found" in err
    assert sorted(json.loads((out / "landmarks.json").read_text())["cases"]) == ["Normal/ID (1)"]


def test_coco_keypoint_names_must_be_corner_names(tmp_path, capsys):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "keypoints": ["nose"]}]}))
    assert (
        main(["import", "landmarks", "--format", "coco-keypoints", "--src", str(path), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "not corner names" in capsys.readouterr().err


def test_quadrilateral_problems():
    quad = np.array([[10, 10], [30, 10], [30, 20], [10, 20]], dtype=float)
    assert quadrilateral_problem(quad, (50, 50)) is None
    assert "self-intersecting" in quadrilateral_problem(quad[[0, 1, 3, 2]], (50, 50))
    assert "outside" in quadrilateral_problem(quad + np.array([0.0, 35.0]), (50, 50))
    assert "degenerate" in quadrilateral_problem(np.array([[1, 1], [5, 1], [9, 1], [3, 1]], dtype=float), (50, 50))
    missing = quad.copy()
    missing[2] = np.nan
    assert quadrilateral_problem(missing, (50, 50)) == "missing corners: inferior-right"


def test_regional_cobb_angles_of_c_and_s_curves():
    straight = regional_cobb_angles(_spine(np.zeros(17)), H)
    assert straight.angles == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)

    # C curve: bodies tilt from +10 to -20 degrees, the chord has every centre on one side.
    tilts = np.concatenate([np.linspace(10, -20, 12), np.linspace(-19, -15, 5)])
    bend = 30 * np.sin(np.linspace(0, np.pi, 17))
    c = regional_cobb_angles(_spine(tilts, bend=bend), H)
    assert not c.s_shaped
    assert c.angles[0] == pytest.approx(30.0, abs=1e-6)
    assert c.ends[0] == (0, 11)
    assert c.angles[1] == pytest.approx(0.0, abs=1e-6)  # the top body is the upper end vertebra
    assert c.angles[2] == pytest.approx(5.0, abs=1e-6)  # the bottom body against the lower end vertebra

    # S curve: +15 at body 5 and -25 at body 10 bound the major curve; -5 at body 2 and 0 at body 16 the others.
    tilts = np.interp(np.arange(17), [0, 2, 5, 10, 16], [5, -5, 15, -25, 0])
    bend = 25 * np.sin(np.linspace(0, 2 * np.pi, 17))
    s = regional_cobb_angles(_spine(tilts, bend=bend), 10 * H)
    assert s.s_shaped
    assert s.angles == pytest.approx((40.0, 20.0, 25.0), abs=1e-6)
    assert s.ends == ((5, 10), (2, 5), (10, 16))
    # The same spine on a short film puts the major curve in the lower half: the third angle is then above the
    # second one's upper body.
    low = regional_cobb_angles(_spine(tilts, bend=bend), 100)
    assert low.angles == pytest.approx((40.0, 20.0, 10.0), abs=1e-6)
    assert low.ends == ((5, 10), (2, 5), (0, 2))


def test_cobb_smape():
    assert cobb_smape([[10, 20, 30]], [[10, 20, 30]]) == 0.0
    assert cobb_smape([[12, 20, 30], [0, 0, 0]], [[10, 20, 30], [0, 0, 0]]) == pytest.approx(100 * 2 / 122 / 2)
    with pytest.raises(ValueError, match="same"):
        cobb_smape([[1, 2, 3]], [[1, 2]])


def test_measure_of_an_imported_film_gives_its_regional_cobb_angles(tmp_path):
    """Corners -> mask -> measure: the three angles come back within 1.5 degrees of the corners' own."""
    src = tmp_path / "boostnet_labeldata"
    tilts = np.interp(np.arange(17), [0, 3, 9, 16], [0, 12, -14, 4])
    corners = _spine(
        tilts, x0=150.0, height=30.0, gap=10.0, width=60.0, bend=40 * np.sin(np.linspace(0, 2 * np.pi, 17))
    )
    size = (300, 720)
    _film(src / "data" / "training" / "a AP.jpg", size)
    (src / "labels" / "training").mkdir(parents=True)
    (src / "labels" / "training" / "filenames.csv").write_text("a AP.jpg\n")
    np.savetxt(src / "labels" / "training" / "landmarks.csv", [_aasce_row(corners, size)], delimiter=",")
    out = tmp_path / "aasce"
    assert main(["import", "landmarks", "--format", "aasce", "--src", str(src), "--out", str(out)]) == 0
    df = measure_tree(out, "AP", out_csv=tmp_path / "m.csv", overlay=False, anchor="L5")
    summary = df[df["row_type"] == "summary"].iloc[0]
    assert summary["n_vertebrae"] == 17 and summary["levels"] == "T1-L5"
    expected = regional_cobb_angles(corners, size[1]).angles
    got = [summary[f"cobb_{n}_deg"] for n in ("proximal_thoracic", "main_thoracic", "thoracolumbar_lumbar")]
    np.testing.assert_allclose(got, expected, atol=1.5)
    assert set(pd.read_csv(tmp_path / "m.csv").columns) >= {"cobb_main_thoracic_deg"}
