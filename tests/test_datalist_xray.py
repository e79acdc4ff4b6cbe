from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dx_dicom
from PIL import Image

from spine_monai.cli import main
from spine_monai.data.datalist import assign_splits, read_datalist, resolve_paths, select_records
from spine_monai.data.io import read_radiograph
from spine_monai.data.layout import ALL_STRUCTURES
from spine_monai.data.xray import build_xray_datalist
from spine_monai.errors import DataError


def test_cli_synth_then_datalist(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["synth", "xray", "--out", str(root), "--cases", "12", "--seed", "4", "--workers", "1"]) == 0
    out = tmp_path / "datalist.json"
    assert (
        main(["datalist", "xray", "--root", str(root), "--out", str(out), "--folds", "3", "--test-fraction", "0.25"])
        == 0
    )
    dl = json.loads(out.read_text())
    assert len(dl["training"]) == 8 and len(dl["testing"]) == 4  # 2 of each 6-patient class
    assert dl["problems"] == []
    for r in dl["training"] + dl["testing"]:
        for key in ("AP", "LAT", *ALL_STRUCTURES):
            assert not Path(r[key]).is_absolute()
            assert (root / r[key]).is_file(), r[key]
        assert r["class_label"] == {"Normal": 0, "Damaged": 1}[r["class"]]
    assert "wrote" in capsys.readouterr().out


def test_folds_are_patient_level_stratified_and_seeded():
    records = [{"patient": f"{c}/ID ({i})", "class": c} for c in ("Normal", "Damaged") for i in range(1, 24)]
    train, test = assign_splits(records, folds=5, test_fraction=0.2, seed=7)
    ids = [r["patient"] for r in train + test]
    assert len(ids) == len(set(ids)) == len(records)
    test_classes = Counter(r["class"] for r in test)
    assert test_classes["Normal"] == test_classes["Damaged"] == 5
    per_fold = Counter((r["fold"], r["class"]) for r in train)
    for cls in ("Normal", "Damaged"):
        sizes = [per_fold[(f, cls)] for f in range(5)]
        assert max(sizes) - min(sizes) <= 1, sizes
    fold_sizes = Counter(r["fold"] for r in train)
    assert max(fold_sizes.values()) - min(fold_sizes.values()) <= 1
    again, _ = assign_splits(list(reversed(records)), folds=5, test_fraction=0.2, seed=7)
    assert again == train
    other, _ = assign_splits(records, folds=5, test_fraction=0.2, seed=8)
    assert other != train


def test_records_sharing_a_patient_share_a_fold():
    records = [{"patient": f"P{i // 3}", "class": "Normal", "slice": i} for i in range(30)]
    train, _ = assign_splits(records, folds=4, seed=0)
    folds_of = {}
    for r in train:
        folds_of.setdefault(r["patient"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in folds_of.values())


def test_select_and_resolve(xray_root, tmp_path):
    dl = build_xray_datalist(xray_root, folds=2, test_fraction=0.25, seed=0)
    path = tmp_path / "dl.json"
    path.write_text(json.dumps(dl))
    dl = read_datalist(path)
    train = select_records(dl, "train", fold=0)
    val = select_records(dl, "validation", fold=0)
    assert {r["fold"] for r in train} == {1} and {r["fold"] for r in val} == {0}
    assert len(select_records(dl, "test")) == 2
    assert select_records(dl, "testing") == select_records(dl, "test")  # the datalist's own name for the list
    with pytest.raises(ValueError, match="unknown split 'tests'"):
        select_records(dl, "tests")
    resolved = resolve_paths(val, ["AP", "Ap_Vertebra"], xray_root)
    assert all(Path(r["AP"]).is_file() for r in resolved)
    with pytest.raises(DataError, match="fold 9 is not in the datalist"):
        select_records(dl, "validation", fold=9)
    with pytest.raises(DataError, match="record has no Lat_Foo"):
        resolve_paths(val, ["Lat_Foo"], xray_root)


def test_datalist_read_errors(tmp_path):
    with pytest.raises(DataError, match="datalist not found"):
        read_datalist(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_datalist(bad)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"training": [], "testing": []}))
    with pytest.raises(DataError, match="empty datalist"):
        select_records(read_datalist(empty), "test")


def test_dicom_views_monochrome1_and_rescale(xray_copy):
    """A CR/DX DICOM may replace AP.jpg; MONOCHROME1 is inverted and rescale slope/intercept applied."""
    patient = xray_copy / "Normal" / "ID (1)"
    jpg = patient / "AP" / "AP.jpg"
    grey = np.asarray(Image.open(jpg).convert("L"), dtype=np.uint16)
    stored = (255 - grey) * 4  # MONOCHROME1: bright bone stored as low values
    jpg.unlink()
    write_dx_dicom(patient / "AP" / "AP.dcm", stored, "MONOCHROME1", slope=2.0, intercept=-10.0)
    patient2 = xray_copy / "Damaged" / "ID (1)"
    lat = patient2 / "LAT" / "LAT.jpg"
    grey2 = np.asarray(Image.open(lat).convert("L"), dtype=np.uint16)
    lat.unlink()
    write_dx_dicom(patient2 / "LAT" / "LAT.dcm", grey2, "MONOCHROME2")

    dl = build_xray_datalist(xray_copy, folds=2)
    assert dl["problems"] == []
    rec = next(r for r in dl["training"] if r["patient"] == "Normal/ID (1)")
    assert rec["AP"].endswith("AP/AP.dcm")
    arr = read_radiograph(xray_copy / rec["AP"])
    expected = stored * 2.0 - 10.0
    expected = expected.max() + expected.min() - expected
    np.testing.assert_allclose(arr, expected)
    assert np.corrcoef(arr.ravel(), grey.ravel())[0, 1] > 0.999  # bone stays bright after inversion
    np.testing.assert_allclose(read_radiograph(patient2 / "LAT" / "LAT.dcm"), grey2)


def test_a_test_only_datalist_for_a_held_out_set(xray_root, tmp_path, capsys):
    """--test-fraction 1 puts every patient in 'testing'; evaluating a datalist without one names the fix."""
    out = tmp_path / "test_only.json"
    assert main(["datalist", "xray", "--root", str(xray_root), "--out", str(out), "--test-fraction", "1"]) == 0
    dl = read_datalist(out)
    assert dl["training"] == [] and len(dl["testing"]) == 8
    assert len(select_records(dl, "test", fold=0)) == 8
    train_only = {"training": [{"patient": "p", "fold": 0}], "testing": []}
    with pytest.raises(DataError) as e:
        select_records(train_only, "test", fold=0)
    assert e.value.reason == (
        "empty datalist: no records for split 'test': the datalist has no testing list "
        "(build one with --test-fraction, or pass --eval_split all)"
    )
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        assign_splits([{"patient": "p"}], test_fraction=1.5)
