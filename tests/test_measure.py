"""Measurements from vertebra masks: instances, levels, corners and Genant grades, spine angles, the command."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from spine_monai.cli import build_parser
from spine_monai.data.io import write_mask
from spine_monai.errors import DataError
from spine_monai.measure import (
    assign_levels,
    genant_grade,
    measure_spine,
    measure_tree,
    overlay_title,
    separate_instances,
)
from spine_monai.synthetic.xray import generate_case, write_xray_dataset


def _spine_mask(
    tilts_deg, size=(300, 640), height=30.0, width=40.0, disc=10.0, anterior_loss=None, skip=()
) -> np.ndarray:
    """Rectangular bodies stacked down the image, each tilted by its angle; ``anterior_loss[i]`` shortens the
    left (anterior) wall of body i symmetrically about its centre; bodies in ``skip`` are left out."""
    img = Image.new("1", size, 0)
    draw = ImageDraw.Draw(img)
    centre = np.array([size[0] / 2, 30.0])
    tilts = np.radians(tilts_deg)
    for i, t in enumerate(tilts):
        if i:
            mid = 0.5 * (tilts[i - 1] + t)
            centre = centre + (height + disc) * np.array([math.sin(mid), math.cos(mid)])
        if i in skip:
            continue
        u = np.array([math.cos(t), -math.sin(t)])
        v = np.array([math.sin(t), math.cos(t)])
        left = height * (1.0 - (anterior_loss or {}).get(i, 0.0)) / 2
        corners = [
            centre - width / 2 * u - left * v,
            centre + width / 2 * u - height / 2 * v,
            centre + width / 2 * u + height / 2 * v,
            centre - width / 2 * u + left * v,
        ]
        draw.polygon([tuple(p) for p in corners], fill=1)
    return np.asarray(img)


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("measure") / "data"
    write_xray_dataset(root, cases=2, seed=11, workers=1)
    return root


@pytest.mark.parametrize("joint", ["bridge", "corners"])
def test_touching_bodies_are_split_and_ordered(joint):
    mask = np.zeros((120, 100), bool)
    mask[10:40, 20:70] = True
    if joint == "bridge":
        mask[60:90, 25:75] = True
        mask[40:60, 44:47] = True  # a 3 px bridge across the disc
        lower_centre = (75, 50)
    else:
        img = Image.new("1", (100, 120), 0)
        ImageDraw.Draw(img).polygon([(40, 38), (90, 50), (84, 76), (34, 64)], fill=1)  # corners overlap
        mask |= np.asarray(img)
        lower_centre = (57, 62)
    assert ndi.label(mask)[1] == 1
    found = separate_instances(mask)
    assert len(found.instances) == 2
    top, bottom = found.instances
    assert top.centroid[1] < bottom.centroid[1]
    assert top.position < bottom.position
    assert found.labels[25, 45] == 1 and found.labels[lower_centre] == 2


def test_a_predicted_mask_is_cleaned_along_the_spine():
    """A stray blob beside the spine is rejected, a body broken in two is one body again, and two bodies whose disc
    the mask filled are cut apart at the disc: twelve bodies in, twelve bodies measured."""
    tilts = np.linspace(6.0, -6.0, 12)
    clean = _spine_mask(tilts, size=(300, 640), height=30, width=40, disc=10)
    truth = separate_instances(clean)
    assert len(truth.instances) == 12 and (truth.rejected, truth.merged, truth.split) == (0, 0, 0)
    mask = clean.copy()
    mask[300:318, 250:268] = True  # a blob on a rib, far to the side
    fragment = truth.labels == 4
    rows = np.nonzero(fragment.any(axis=1))[0]
    mask[rows[len(rows) // 2] - 1 : rows[len(rows) // 2] + 1] &= ~fragment[
        rows[len(rows) // 2] - 1 : rows[len(rows) // 2] + 1
    ]
    bridged = (truth.labels == 8) | (truth.labels == 9)
    cols = np.nonzero(bridged.any(axis=0))[0]
    between = np.zeros_like(mask)
    r8, r9 = np.nonzero((truth.labels == 8).any(1))[0], np.nonzero((truth.labels == 9).any(1))[0]
    between[r8.max() : r9.min() + 1, cols.min() : cols.max() + 1] = True  # as wide as the bodies: no saddle
    mask |= between
    assert ndi.label(mask)[1] == 13  # the broken body counts two, the bridged pair one, and the blob
    found = separate_instances(mask)
    assert (found.rejected, found.merged, found.split) == (1, 1, 1)
    assert len(found.instances) == 12
    centres = np.array([i.centroid for i in found.instances])
    expected = np.array([i.centroid for i in truth.instances])
    assert np.abs(centres - expected).max() < 6
    m = measure_spine(mask, "AP")
    assert len(m.vertebrae) == 12
    assert any("1 blobs away from the spine rejected" in n for n in m.notes)


def test_shallow_blobs_are_specks_and_instances_are_in_the_films_frame():
    """A thin line as long as a body's area (a rib edge) holds no watershed seed and is no blob at all; the clean-up
    works on the spine's box, yet every box, centroid and label lies where the film has it."""
    mask = _spine_mask(np.linspace(4.0, -4.0, 8), size=(300, 480)).copy()
    mask[60:260, 20:22] = True  # 400 px, 1 px deep
    found = separate_instances(mask)
    assert len(found.instances) == 8 and found.rejected == 0
    assert not found.labels[:, :30].any()
    for inst in found.instances:
        rows, cols = np.nonzero(found.labels == inst.label)
        assert inst.area == rows.size
        assert inst.bbox == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        np.testing.assert_allclose(inst.centroid, [cols.mean(), rows.mean()])


def test_order_follows_the_curve_of_a_bent_spine():
    # A spine curling through 110 degrees: its lowest bodies climb back up, so sorting by row would mix them.
    mask = _spine_mask(np.linspace(0, 110, 12), size=(640, 640), height=24, width=30, disc=8)
    found = separate_instances(mask)
    assert len(found.instances) == 12
    positions = [i.position for i in found.instances]
    assert positions == sorted(positions)
    centroids = np.array([i.centroid for i in found.instances])
    assert (np.diff(centroids[:, 1]) < 0).any()
    steps = np.linalg.norm(np.diff(centroids, axis=0), axis=1)
    assert steps.max() < 40  # consecutive instances are anatomical neighbours


def test_cobb_angle_of_drawn_spine():
    tilts = np.linspace(12.0, -12.0, 10)
    m = measure_spine(_spine_mask(tilts), "AP")
    assert len(m.vertebrae) == 10
    assert m.cobb_angle == pytest.approx(24.0, abs=2.0)
    assert m.cobb_levels == ("T9", "S1")  # top and bottom of ten bodies counted up from S1


def test_overlay_title_names_unnamed_end_vertebrae_by_place():
    tilts = np.linspace(12.0, -12.0, 10)
    named = measure_spine(_spine_mask(tilts), "AP")
    assert overlay_title(named, "x").startswith("x  Cobb 2")
    assert "(T9-S1)" in overlay_title(named, "x") and "\nPT " in overlay_title(named, "x")
    # Counted down from T12 at the top, the lowest body would be past S1: no name, its place instead.
    unnamed = measure_spine(_spine_mask(tilts), "AP", anchor="L1", anchor_end="top")
    assert unnamed.cobb_levels == ("L1", None)
    assert "(L1-body 10)" in overlay_title(unnamed, "x") and "None" not in overlay_title(unnamed, "x")


def test_cobb_and_lordosis_on_generated_cases():
    for index in (0, 1):
        case = generate_case(21, index, damaged=bool(index))
        ap = measure_spine(case.masks["Ap_Vertebra"], "AP")
        lat = measure_spine(case.masks["Lat_Vertebra"], "LAT")
        assert ap.cobb_angle == pytest.approx(case.truth["AP"]["cobb_angle"], abs=2.5)
        assert lat.lordosis_angle == pytest.approx(case.truth["LAT"]["lordosis_angle"], abs=3.0)
        assert lat.lordosis_reference == "S1"
        assert [v.level for v in lat.vertebrae] == case.truth["levels"]


@pytest.mark.parametrize(("loss", "grade"), [(0.10, 0), (0.30, 2), (0.45, 3)])
def test_genant_grade_of_anterior_wedge(loss, grade):
    mask = _spine_mask([0.0] * 7, anterior_loss={3: loss})
    m = measure_spine(mask, "LAT")
    grades = [v.genant_grade for v in m.vertebrae]
    assert grades[3] == grade
    assert grades[:3] + grades[4:] == [0] * 6
    assert m.vertebrae[3].ratio_anterior_posterior == pytest.approx(1 - loss, abs=0.05)


def test_genant_thresholds():
    assert [genant_grade(x) for x in (0.0, 0.199, 0.2, 0.249, 0.25, 0.4, 0.41)] == [0, 0, 1, 1, 2, 2, 3]


def test_missing_vertebra_skips_a_level():
    m = measure_spine(_spine_mask([0.0] * 9, skip={5}), "LAT")
    names = [v.level for v in m.vertebrae]
    assert names == ["T10", "T11", "T12", "L1", "L2", "L4", "L5", "S1"]
    assert m.missing_levels == ["L3"]
    assert [v.missing_before for v in m.vertebrae] == [0, 0, 0, 0, 0, 1, 0, 0]
    assert math.isnan(m.vertebrae[4].listhesis_pct)  # not measured across the gap


def test_assign_levels_anchors_and_gaps():
    top = assign_levels([0, 10, 20, 41, 51], anchor="T12", anchor_end="top")
    assert top.names == ["T12", "L1", "L2", "L4", "L5"]
    assert top.gaps == [False, False, False, True, False]
    assert top.missing == ["L3"]
    no_sacrum = assign_levels([0, 10, 20], anchor="L5")
    assert no_sacrum.names == ["L3", "L4", "L5"]
    with pytest.raises(ValueError, match="anchor"):
        assign_levels([0, 10], anchor="C3")


def test_lordosis_without_sacrum_uses_lowest_endplate():
    case = generate_case(21, 0, damaged=False)
    mask = case.masks["Lat_Vertebra"]
    found = separate_instances(mask)
    without_s1 = mask & (found.labels != found.instances[-1].label)
    m = measure_spine(without_s1, "LAT", anchor="L5")
    assert m.lordosis_reference == "L5 inferior"
    assert math.isfinite(m.lordosis_angle)


@pytest.mark.parametrize(
    ("mask", "reason"),
    [
        (np.zeros((64, 48), bool), "empty"),
        (np.pad(np.ones((2, 2), bool), ((30, 32), (20, 26))), "smaller than"),
        (np.ones((64, 48), bool), "covers 100%"),
        (np.pad(np.ones((20, 30), bool), ((20, 24), (9, 9))), "only 1 vertebral body"),
    ],
    ids=["empty", "speck", "all-ones", "one-body"],
)
def test_degenerate_masks_raise_clear_data_error(mask, reason):
    with pytest.raises(DataError, match=reason) as info:
        measure_spine(mask, "AP", name="case/AP/Ap_Vertebra.png")
    assert info.value.path == "case/AP/Ap_Vertebra.png"


def test_measure_tree_writes_csv_overlays_and_problems(tiny_tree, tmp_path):
    broken = tmp_path / "masks"
    shutil.copytree(tiny_tree, broken)
    bad = next(broken.glob("*/ID (1)/LAT/Lat_Vertebra.png"))
    write_mask(bad, np.zeros((576, 384), bool))
    out = tmp_path / "out" / "measure.csv"
    df = measure_tree(broken, out_csv=out, images_dir=tiny_tree)
    assert out.is_file()
    written = pd.read_csv(out)
    assert set(written["row_type"]) == {"vertebra", "summary"}
    summaries = written[written["row_type"] == "summary"]
    assert len(summaries) == 3  # 2 patients x 2 views, less the emptied LAT mask
    ap = summaries[summaries["view"] == "AP"]
    assert ap["cobb_angle_deg"].notna().all() and ap["cobb_upper"].notna().all()
    lat = summaries[summaries["view"] == "LAT"]
    assert (lat["lordosis_reference"] == "S1").all() and lat["max_genant_grade"].notna().all()
    vertebrae = written[written["row_type"] == "vertebra"]
    assert vertebrae["level"].notna().all() and (vertebrae["superior_left_x"] > 0).all()
    assert len(df) == len(written)
    assert len(df.attrs["problems"]) == 1 and "empty" in df.attrs["problems"][0]["reason"]
    problems = pd.read_csv(out.with_name("measure_problems.csv"))
    assert str(bad) in problems["path"].iloc[0]
    overlays = sorted(p.name for p in out.parent.rglob("*_measure.png"))
    assert overlays == ["AP_measure.png", "AP_measure.png", "LAT_measure.png"]
    # Films measured on threads give the rows, problems and overlays of a one-by-one run, in the same order.
    alone = tmp_path / "alone" / "measure.csv"
    one_by_one = measure_tree(broken, out_csv=alone, images_dir=tiny_tree, workers=1)
    assert alone.read_bytes() == out.read_bytes()
    assert one_by_one.attrs["problems"] == df.attrs["problems"]
    for overlay in out.parent.rglob("*_measure.png"):
        assert (alone.parent / overlay.relative_to(out.parent)).read_bytes() == overlay.read_bytes()


def test_measure_parser_handler(tiny_tree, tmp_path, capsys):
    parser = build_parser()
    out = tmp_path / "m.csv"
    args = parser.parse_args(["measure", "--masks", str(tiny_tree), "--view", "ap", "--out", str(out), "--no-overlay"])
    assert args.func(args) == 0
    assert "2 patient-views" in capsys.readouterr().out
    assert set(pd.read_csv(out)["view"]) == {"AP"}
    assert not list(tmp_path.rglob("*_measure.png"))
    args = parser.parse_args(["measure", "--masks", str(tmp_path / "nowhere"), "--out", str(out)])
    assert args.func(args) == 2
    assert "ELL888" in capsys.readouterr().err
