"""DICOM SEG and SR written with highdicom, read back with highdicom and pydicom: the SEG's pixels are the masks, the
SR's values are the measurement CSV's, and both reference the film they were made from."""

from __future__ import annotations

import math
import shutil

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import write_dx_dicom

from spine_monai.data.io import read_mask, read_radiograph
from spine_monai.errors import DataError
from spine_monai.measure.command import measure_tree
from spine_monai.report.dicom import LOCAL_SCHEME, write_film_segmentation, write_measurement_report

STRUCTURES = ("Ap_Vertebra", "Ap_Pedicle", "Ap_Spinous_Process")


@pytest.fixture(scope="module")
def film(xray_root, tmp_path_factory):
    """The synthetic AP film of Damaged/ID (1) as a PACS DX export, its masks and its measurement rows."""
    folder = xray_root / "Damaged" / "ID (1)" / "AP"
    image = read_radiograph(folder / "AP.jpg")
    path = write_dx_dicom(tmp_path_factory.mktemp("dicom") / "AP.dcm", image / image.max() * 4000, view="AP")
    masks = {s: read_mask(folder / f"{s}.png") for s in STRUCTURES}
    table = measure_tree(xray_root, "AP", out_csv=path.parent / "measure.csv", overlay=False)
    rows = table[table["patient"] == "Damaged/ID (1)"].to_dict("records")
    return path, masks, rows


def test_segmentation_holds_the_masks_and_references_the_film(film, tmp_path):
    path, masks, _ = film
    source = pydicom.dcmread(path)
    seg = hd.seg.segread(write_film_segmentation(path, masks, tmp_path / "seg.dcm"))
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert (seg.StudyInstanceUID, seg.PatientID) == (source.StudyInstanceUID, source.PatientID)
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=False)[0]
    for number, name in enumerate(STRUCTURES, start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == name
        assert np.array_equal(pixels[..., number - 1], masks[name] != 0), name
    types = {seg.get_segment_description(i).segmented_property_type.value for i in (1, 2, 3)}
    assert types == {"51282000", "78972004", "55678000"}  # SNOMED CT vertebra, pedicle, spinous process


def test_report_values_are_the_measurements(film, tmp_path):
    path, _, rows = film
    source = pydicom.dcmread(path)
    sr = hd.sr.srread(write_measurement_report(path, rows, tmp_path / "sr.dcm"))
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    written: dict[str, list[tuple[float, str]]] = {}
    for item in hd.sr.utils.find_content_items(sr, value_type=hd.sr.ValueTypeValues.NUM, recursive=True):
        value = item.MeasuredValueSequence[0]
        unit = value.MeasurementUnitsCodeSequence[0].CodeValue
        written.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append((float(value.NumericValue), unit))
    summary = next(r for r in rows if r["row_type"] == "summary")
    # equal to the precision of a DICOM decimal string (16 characters)
    ((cobb, unit),) = written["Cobb angle"]
    assert unit == "deg" and math.isclose(cobb, summary["cobb_angle_deg"], rel_tol=1e-10)
    vertebrae = [r for r in rows if r["row_type"] == "vertebra"]
    expected = [r["ratio_neighbours"] for r in vertebrae if np.isfinite(r["ratio_neighbours"])]
    got = [v for v, _ in written["Height ratio to neighbouring vertebrae"]]
    assert len(got) == len(expected) > 0
    assert all(math.isclose(a, b, rel_tol=1e-10) for a, b in zip(got, expected, strict=True))
    assert {u for items in written.values() for _, u in items} == {"deg", "1"}
    # the end vertebrae of the Cobb angle, as named in the CSV
    coded = hd.sr.utils.find_content_items(sr, value_type=hd.sr.ValueTypeValues.CODE, recursive=True)
    ends = {c.ConceptNameCodeSequence[0].CodeMeaning: c.ConceptCodeSequence[0] for c in coded}
    assert ends["Upper end vertebra"].CodeValue == summary["cobb_upper"]
    assert ends["Lower end vertebra"].CodeValue == summary["cobb_lower"]
    assert ends["Upper end vertebra"].CodingSchemeDesignator == LOCAL_SCHEME


def test_bad_sources_and_masks_are_named(film, tmp_path):
    path, masks, rows = film
    with pytest.raises(DataError, match=r"Ap_Pedicle: mask \(10, 10\) is not the film's size"):
        write_film_segmentation(path, {**masks, "Ap_Pedicle": np.zeros((10, 10))}, tmp_path / "a.dcm")
    with pytest.raises(DataError, match="Lat_Nothing: no code for this structure"):
        write_film_segmentation(path, {"Lat_Nothing": masks["Ap_Vertebra"]}, tmp_path / "b.dcm")
    bare = write_dx_dicom(tmp_path / "bare.dcm", np.zeros((8, 8)))
    stripped = pydicom.dcmread(bare)
    del stripped.StudyInstanceUID, stripped.SeriesInstanceUID
    stripped.save_as(bare)
    with pytest.raises(DataError, match=r"bare\.dcm.*lacks StudyInstanceUID, SeriesInstanceUID"):
        write_measurement_report(bare, rows, tmp_path / "c.dcm")
    unfit = pydicom.dcmread(path)
    del unfit.PatientBirthDate  # type 2 in the patient module: highdicom needs it present, if empty
    unfit.save_as(tmp_path / "unfit.dcm")
    with pytest.raises(DataError, match=r"unfit\.dcm: cannot make a DICOM SEG referencing it"):
        write_film_segmentation(tmp_path / "unfit.dcm", masks, tmp_path / "e.dcm")
    not_dicom = tmp_path / "film.dcm"
    not_dicom.write_bytes(b"not a dicom file")
    with pytest.raises(DataError, match=r"film\.dcm.*not a readable DICOM file"):
        write_film_segmentation(not_dicom, masks, tmp_path / "d.dcm")
    # nothing half-written
    assert not [n for n in ("a.dcm", "b.dcm", "c.dcm", "d.dcm", "e.dcm") if (tmp_path / n).exists()]
    assert pd.DataFrame(rows)["row_type"].eq("summary").sum() == 1


def test_measure_writes_a_report_for_each_dicom_film_with_the_csvs_values(film, xray_copy, tmp_path):
    path, _, _ = film
    folder = xray_copy / "Damaged" / "ID (1)" / "AP"
    (folder / "AP.jpg").unlink()
    shutil.copy(path, folder / "AP.dcm")
    out_csv = tmp_path / "measure" / "measurements.csv"
    measure_tree(xray_copy, "AP", out_csv=out_csv, images_dir=xray_copy, overlay=False)
    reports = sorted(out_csv.parent.rglob("*_measurements_sr.dcm"))
    assert [r.relative_to(out_csv.parent).as_posix() for r in reports] == ["Damaged/ID (1)/AP_measurements_sr.dcm"]
    table = pd.read_csv(out_csv)
    rows = table[table["patient"] == "Damaged/ID (1)"]
    summary = rows[rows["row_type"] == "summary"].iloc[0]
    sr = hd.sr.srread(reports[0])
    values = {}
    for item in hd.sr.utils.find_content_items(sr, value_type=hd.sr.ValueTypeValues.NUM, recursive=True):
        values.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(
            float(item.MeasuredValueSequence[0].NumericValue)
        )
    assert values["Cobb angle"] == [summary["cobb_angle_deg"]]  # the CSV's value, digit for digit
    vertebrae = rows[rows["row_type"] == "vertebra"]
    ratios = vertebrae["ratio_neighbours"].dropna().tolist()
    assert ratios and values["Height ratio to neighbouring vertebrae"] == ratios
    assert values.get("Genant semiquantitative grade", []) == vertebrae["genant_grade"].dropna().tolist()
