from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from spine_monai.data.layout import STRUCTURES
from spine_monai.synthetic.xray import generate_case, parse_size, write_xray_dataset


def _patients(root):
    return sorted(p for cls in ("Normal", "Damaged") for p in (root / cls).iterdir())


def test_layout_images_and_masks(xray_root):
    patients = _patients(xray_root)
    assert len(patients) == 8
    assert {p.parent.name for p in patients} == {"Normal", "Damaged"}
    for patient in patients:
        assert patient.name.startswith("ID (")
        for view in ("AP", "LAT"):
            with Image.open(patient / view / f"{view}.jpg") as img:
                assert img.format == "JPEG" and img.mode == "RGB"
                assert img.size == (384, 576)
            for name in STRUCTURES[view]:
                with Image.open(patient / view / f"{name}.png") as m:
                    assert m.format == "PNG" and m.mode == "1", name
                    assert m.size == (384, 576)
                    assert np.asarray(m).any(), f"{name} is empty"
            names = {p.name for p in (patient / view).iterdir()}
            assert names == {f"{view}.jpg"} | {f"{s}.png" for s in STRUCTURES[view]}


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_identical_bytes(tmp_path):
    write_xray_dataset(tmp_path / "a", cases=3, seed=11, workers=1)
    write_xray_dataset(tmp_path / "b", cases=3, seed=11, workers=2)
    write_xray_dataset(tmp_path / "c", cases=3, seed=12, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_refuses_to_overwrite(xray_root):
    with pytest.raises(FileExistsError, match="already holds"):
        write_xray_dataset(xray_root, cases=1)


def test_size_option_and_validation(tmp_path):
    assert parse_size("640x960") == (640, 960)
    with pytest.raises(ValueError, match="portrait"):
        parse_size("600x400")
    with pytest.raises(ValueError, match="WxH"):
        parse_size("big")
    case = generate_case(0, 0, damaged=True, size=(640, 960))
    assert case.images["AP"].shape == (960, 640, 3)
    assert case.masks["Lat_Vertebra"].shape == (960, 640)


def _endplate_deg(p, q):
    return math.degrees(math.atan2(-(q[1] - p[1]), q[0] - p[0]))


def test_ground_truth_matches_masks(xray_root):
    truth = json.loads((xray_root / "ground_truth.json").read_text())
    assert truth["size"] == [384, 576]
    assert len(truth["cases"]) == 8
    for key, case in truth["cases"].items():
        cls = key.split("/")[0]
        assert case["class"] == cls
        if cls == "Damaged":
            assert case["fractures"], key
        else:
            assert case["fractures"] == [], key
        for view, mask_name in (("AP", "Ap_Vertebra"), ("LAT", "Lat_Vertebra")):
            vertebrae = case[view]["vertebrae"]
            assert [v["level"] for v in vertebrae] == case["levels"]
            mask = np.asarray(Image.open(xray_root / key / view / f"{mask_name}.png"))
            labels, n = ndimage.label(mask)
            assert n == len(vertebrae), f"{key} {view}: {n} components for {len(vertebrae)} vertebrae"
            for v in vertebrae:
                corners = np.array(v["corners"])
                cx, cy = corners.mean(axis=0)
                comp = labels[int(round(cy)), int(round(cx))]
                assert comp > 0, f"{key} {view} {v['level']}: corner centroid outside the mask"
                x, y = corners[:, 0], corners[:, 1]
                quad_area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
                # PIL fills boundary pixels too, which adds about half the perimeter to small polygons.
                assert 0.8 < (labels == comp).sum() / quad_area < 1.2
        # Cobb angle: the largest difference between endplate angles, from the corners alone.
        ap_angles = [_endplate_deg(*np.array(v["corners"])[:2]) for v in case["AP"]["vertebrae"]]
        assert case["AP"]["cobb_angle"] == pytest.approx(max(ap_angles) - min(ap_angles), abs=0.05)
        assert 0 <= case["AP"]["cobb_angle"] <= 45
        lat = {v["level"]: np.array(v["corners"]) for v in case["LAT"]["vertebrae"]}
        lordosis = _endplate_deg(*lat["S1"][:2]) - _endplate_deg(*lat["L1"][:2])
        assert case["LAT"]["lordosis_angle"] == pytest.approx(lordosis, abs=0.05)
        for f in case["fractures"]:
            heights = next(v["heights"] for v in case["LAT"]["vertebrae"] if v["level"] == f["level"])
            if f["type"] == "wedge":
                ratio = heights["anterior"] / heights["posterior"]
                assert ratio == pytest.approx(1 - f["anterior_height_loss"], abs=0.02)


def test_normal_and_damaged_differ_in_the_pixels():
    """Wedge fractures must be visible: the LAT anterior/posterior height ratio drops below Genant grade 0."""
    for index in range(6):
        normal = generate_case(5, index, damaged=False)
        for v in normal.truth["LAT"]["vertebrae"]:
            assert v["heights"]["anterior"] / v["heights"]["posterior"] > 0.9
    damaged = [generate_case(5, i, damaged=True).truth for i in range(20)]
    kinds = {f["type"] for t in damaged for f in t["fractures"]}
    assert kinds == {"wedge", "burst", "listhesis"}
