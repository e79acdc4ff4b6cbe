"""spine-monai analyze: packaged bundles run on patients' films, then measurements and one report."""

from __future__ import annotations

import json

import highdicom
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import REPO, write_dx_dicom
from monai.bundle import run

from spine_monai.analyze import find_patients
from spine_monai.cli import main
from spine_monai.data import read_radiograph
from spine_monai.package import package_bundle

BUNDLES = ("spine_xray_ap_seg", "spine_xray_lat_seg", "spine_xray_cls")


def _dicom(path, film, view, patient_id):
    image = read_radiograph(film)
    write_dx_dicom(path, image / image.max() * 4000, view=view)
    ds = pydicom.dcmread(path)
    ds.PatientID = patient_id
    ds.save_as(path, enforce_file_format=True)
    return path


def test_patients_are_found_in_every_kind_of_input(xray_root, tmp_path):
    films = xray_root / "Normal" / "ID (2)"
    ap = _dicom(tmp_path / "a.dcm", films / "AP" / "AP.jpg", "PA", "P7")
    lat = _dicom(tmp_path / "b.dcm", films / "LAT" / "LAT.jpg", "LL", "P7")
    unknown = _dicom(tmp_path / "c.dcm", films / "LAT" / "LAT.jpg", "", "P8")
    patients, problems = find_patients(
        [xray_root, ap, lat, unknown, f"AP={films / 'AP' / 'AP.jpg'}", films / "LAT" / "LAT.jpg", tmp_path / "none"],
        patient="walk-in",
    )
    by_name = {p.name: p.films for p in patients}
    assert len([n for n in by_name if n.startswith(("Normal/", "Damaged/"))]) == 8  # the ELL888 tree
    assert by_name["P7"] == {"AP": ap, "LAT": lat}  # PA is an AP view, LL a lateral one
    assert by_name["walk-in"] == {"AP": films / "AP" / "AP.jpg"}
    # a datalist's paths are relative to the dataset root; a patient name cannot leave the output folder
    datalist = tmp_path / "lists" / "datalist.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps({"testing": [{"patient": "../../evil", "AP": "Normal/ID (1)/AP/AP.jpg"}]}))
    listed, _ = find_patients([datalist], dataset_dir=xray_root)
    assert [(p.name, p.films) for p in listed] == [("evil", {"AP": xray_root / "Normal/ID (1)/AP/AP.jpg"})]
    reasons = {p.path: p.reason for p in problems}
    assert "ViewPosition ''" in reasons[str(unknown)]
    assert "needs its view" in reasons[str(films / "LAT" / "LAT.jpg")]
    assert reasons[str(tmp_path / "none")] == "no such file or folder"


@pytest.fixture(scope="module")
def packaged(xray_root, datalist, tmp_path_factory):
    """The three X-ray bundles trained one epoch on the synthetic set and packaged as zips, as a clinic gets them."""
    base = tmp_path_factory.mktemp("analyze")
    for bundle in BUNDLES:
        configs = REPO / "bundles" / bundle / "configs"
        out = base / "runs" / bundle
        extra = {"spatial_size": [192, 128]} if bundle == "spine_xray_cls" else {}
        run(
            config_file=str(configs / "train.json"),
            dataset_dir=str(xray_root),
            datalist=str(datalist),
            output_dir=str(out),
            num_workers=0,
            progress_bar=False,
            batch_size=2,
            val_interval=1,
            **{"train#trainer#max_epochs": 1},
            **extra,
        )
        overrides = {"spatial_size": [192, 128]} if extra else None
        package_bundle(
            REPO / "bundles" / bundle, base / "bundles", ckpt=out / "models" / "model.pt", overrides=overrides
        )
    return base / "bundles"


@pytest.mark.slow
def test_analyze_from_packaged_zips(packaged, xray_copy, tmp_path, capsys):
    broken = xray_copy / "Normal" / "ID (3)" / "LAT" / "LAT.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert (
        main(["analyze", "--bundles", str(packaged), "--input", str(xray_copy), "--out", str(out), "--no-progress"])
        == 1
    )
    # the broken film is listed, at the end and in failures.csv, and every other patient has its results
    assert str(broken) in capsys.readouterr().err
    assert str(broken) in set(pd.read_csv(out / "failures.csv")["path"])
    patient = out / "Damaged" / "ID (1)"
    assert (patient / "AP" / "Ap_Vertebra.png").is_file() and (patient / "LAT" / "Lat_Vertebra.png").is_file()
    assert (patient / "AP_measure.png").is_file() and (patient / "measurements.csv").is_file()
    assert set(json.loads((patient / "classification.json").read_text())) >= {"patient", "prob_damaged"}
    assert sorted(p.name for p in (patient / "gradcam").iterdir()) == ["AP_gradcam.png", "LAT_gradcam.png"]
    assert not (out / "Normal" / "ID (3)" / "LAT").exists() and (out / "Normal" / "ID (3)" / "AP").is_dir()
    report = (out / "report.html").read_text()
    assert "Damaged/ID (1)" in report and "GradCAM" in report
    assert set(pd.read_csv(out / "measurements.csv")["view"]) == {"AP", "LAT"}
    # the images are moved into the patients' folders, not kept twice; work/ keeps only the bundles' own tables
    assert not (out / "work" / "bundles").exists()
    assert sorted({f.suffix for f in (out / "work").rglob("*") if f.is_file()}) == [".csv"]


@pytest.mark.slow
def test_analyze_dicom_films_gives_dicom_seg_and_sr(packaged, xray_root, tmp_path):
    films = tmp_path / "pacs"
    films.mkdir()
    source = xray_root / "Damaged" / "ID (2)"
    ap = _dicom(films / "1.dcm", source / "AP" / "AP.jpg", "AP", "PACS-1")
    _dicom(films / "2.dcm", source / "LAT" / "LAT.jpg", "LL", "PACS-1")
    out = tmp_path / "out"
    assert main(["analyze", "--bundles", str(packaged), "--input", str(films), "--out", str(out), "--no-progress"]) == 0
    patient = out / "PACS-1"
    seg = highdicom.seg.segread(patient / "AP" / "AP_seg.dcm")
    reference = pydicom.dcmread(ap)
    assert seg.StudyInstanceUID == reference.StudyInstanceUID
    pixels = seg.get_pixels_by_source_instance([reference.SOPInstanceUID], combine_segments=False)[0]
    mask = np.asarray(read_radiograph(patient / "AP" / "Ap_Vertebra.png")) > 0
    assert np.array_equal(pixels[..., 0], mask)
    sr = highdicom.sr.srread(patient / "AP_measurements_sr.dcm")
    assert sr.StudyInstanceUID == reference.StudyInstanceUID
    assert (patient / "LAT_measurements_sr.dcm").is_file() and (out / "report.html").is_file()
