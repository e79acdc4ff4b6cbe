"""DICOM outputs a PACS viewer can show: a Segmentation (SEG) per film and a measurement Structured Report (SR).

Both are written with highdicom and reference the source film: its patient, study, series and
SOP instance are carried over, so a viewer files them with the film they were made from.

- :func:`write_film_segmentation`: one binary segment per structure (``Ap_Vertebra`` ...), each with coded anatomy.
  The vertebra, pedicle and spinous-process masks carry SNOMED CT codes from pydicom's dictionary; the structures
  SNOMED has no concept for in that dictionary (the disc-height region and the anterior and posterior vertebral
  lines) carry codes of this project's local scheme, :data:`LOCAL_SCHEME`, with their names as meanings.
- :func:`write_series_segmentation`: a multi-frame SEG of an MRI series' label, one frame per slice and one segment
  per class, referencing every instance of the series.
- :func:`write_measurement_report`: a Comprehensive 3D SR following TID 1500 (Measurement Report). One measurement
  group per angle (the Cobb angle with its end vertebrae, the regional Cobb angles, the lumbar lordosis) and one per
  vertebra (its height ratios and Genant grade), each value with its UCUM unit, from the rows ``spine-monai measure``
  writes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from spine_monai.errors import DataError

__all__ = [
    "LOCAL_SCHEME",
    "MRI_CLASS_CODES",
    "STRUCTURE_CODES",
    "write_film_segmentation",
    "write_measurement_report",
    "write_series_segmentation",
]

# The coding scheme of the concepts this project defines itself (DICOM PS3.16 allows a local "99" scheme).
LOCAL_SCHEME = "99SPMONAI"


def _local(value: str, meaning: str) -> Code:
    return Code(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


# structure -> (segmented property category, segmented property type); SNOMED CT codes from pydicom's dictionary.
STRUCTURE_CODES: dict[str, tuple[Code, Code]] = {
    "Ap_Vertebra": (codes.SCT.AnatomicalStructure, codes.SCT.Vertebra),
    "Lat_Vertebra": (codes.SCT.AnatomicalStructure, codes.SCT.Vertebra),
    "Ap_Pedicle": (codes.SCT.AnatomicalStructure, codes.SCT.PedicleOfVertebra),
    "Ap_Spinous_Process": (codes.SCT.AnatomicalStructure, codes.SCT.SpinousProcessOfVertebra),
    "Lat_Spinous_Process": (codes.SCT.AnatomicalStructure, codes.SCT.SpinousProcessOfVertebra),
    "Lat_Disk_Height": (codes.SCT.AnatomicalStructure, _local("DISC-HEIGHT", "Intervertebral disc height region")),
    "Lat_Anterior_Vertebral_Line": (codes.SCT.SpatialAndRelationalConcept, _local("AVL", "Anterior vertebral line")),
    "Lat_Posterior_Vertebral_Line": (codes.SCT.SpatialAndRelationalConcept, _local("PVL", "Posterior vertebral line")),
}

# What a source film must carry for its derived objects to be filed with it.
_REQUIRED = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns")


def _highdicom():
    # Imported on use: highdicom takes a second to import, which inference from JPEG films does not need.
    import highdicom

    return highdicom


def _read_source(path: str | os.PathLike):
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # pydicom raises several types for a file that is not DICOM
        raise DataError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    missing = [k for k in _REQUIRED if k not in ds]
    if missing:
        raise DataError(path, f"the film lacks {', '.join(missing)}, which a SEG or SR referencing it must carry over")
    return ds


def _coded(code: Code):
    hd = _highdicom()
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme_designator, meaning=code.meaning)


def _algorithm(version: str):
    hd = _highdicom()
    return hd.AlgorithmIdentificationSequence(
        name="spine-monai", version=version, family=codes.cid7162.ArtificialIntelligence
    )


def write_film_segmentation(
    source: str | os.PathLike,
    masks: Mapping[str, np.ndarray],
    out: str | os.PathLike,
    series_number: int = 901,
) -> Path:
    """Write a binary DICOM Segmentation of one film: one segment per structure, referencing the film.

    Args:
        source: the film's DICOM file (CR or DX).
        masks: structure name -> mask (rows, columns) of the film's size; non-zero is inside. Names must be in
            :data:`STRUCTURE_CODES`. An empty mask gives a segment with no frame.
        out: the file to write.
        series_number: the SEG series' number.

    Returns:
        ``out``.

    Raises:
        DataError: naming the file, for a source that is not DICOM or lacks what the SEG must carry over, a mask of
            another size than the film, or a structure without a code.
    """
    ds = _read_source(source)
    shape = (int(ds.Rows), int(ds.Columns))
    problems = []
    for name, mask in masks.items():
        if name not in STRUCTURE_CODES:
            problems.append(f"{name}: no code for this structure (known: {', '.join(STRUCTURE_CODES)})")
        elif np.asarray(mask).shape != shape:
            problems.append(f"{name}: mask {np.asarray(mask).shape} is not the film's size {shape}")
    if problems:
        raise DataError(source, "; ".join(problems))
    names = list(masks)
    stack = np.stack([np.asarray(masks[n]) != 0 for n in names], axis=-1)[None]  # (frames, rows, cols, segments)
    segments = [(name, STRUCTURE_CODES[name][0], STRUCTURE_CODES[name][1]) for name in names]
    return _write_segmentation(source, [ds], stack, segments, "spine-monai segmentation bundles", series_number, out)


# MRI class -> segmented property type; SNOMED CT where pydicom's dictionary has the concept, else the local scheme.
MRI_CLASS_CODES: dict[str, Code] = {
    "vertebrae": codes.SCT.Vertebra,
    "sacrum": codes.SCT.Sacrum,
    "intervertebral_discs": _local("DISC", "Intervertebral disc"),
    "spinal_cavity": codes.SCT.SpinalCanalStructure,
    "subcutaneous_fat": codes.SCT.AdiposeTissue,
    "epidural_fat": codes.SCT.AdiposeTissue,
    "intramuscular_fat": codes.SCT.AdiposeTissue,
    "retroperitoneal_fat": codes.SCT.AdiposeTissue,
    "nerve_root": _local("NERVE-ROOT", "Spinal nerve root"),
    "blood_vessels": codes.SCT.BloodVessel,
    "muscle": codes.SCT.SkeletalMuscle,
}


def write_series_segmentation(
    series: str | os.PathLike,
    label: np.ndarray,
    class_names: Sequence[str],
    out: str | os.PathLike,
    series_number: int = 903,
) -> Path:
    """Write a multi-frame DICOM Segmentation of an MRI series: one frame per slice, one segment per class.

    Args:
        series: the folder of the DICOM series the label was predicted on.
        label: class ids on the series' grid, as :func:`spine_monai.data.mri.read_volume` orders it (column, row,
            slice); 0 is background.
        class_names: names in class-id order (``class_names[0]`` the background); a name without a SNOMED CT code in
            :data:`MRI_CLASS_CODES` gets a local code with the name as its meaning.
        out: the file to write.
        series_number: the SEG series' number.

    Returns:
        ``out``.

    Raises:
        DataError: naming the series when its slices or their size differ from the label's, or a header lacks what
            the SEG must carry over.
    """
    from spine_monai.data.mri import dicom_series_datasets

    datasets = dicom_series_datasets(series)
    label = np.asarray(label)
    expected = (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    if label.shape != expected:
        raise DataError(series, f"label {label.shape} is not the series' grid (columns, rows, slices) {expected}")
    missing = sorted({k for ds in datasets for k in _REQUIRED if k not in ds})
    if missing:
        raise DataError(series, f"the series lacks {', '.join(missing)}, which a SEG referencing it must carry over")
    frames = np.ascontiguousarray(np.transpose(label, (2, 1, 0))).astype(np.uint8)  # (slice, row, column)
    segments = [
        (name, codes.SCT.AnatomicalStructure, MRI_CLASS_CODES.get(name, _local(name.upper(), name)))
        for name in class_names[1:]
    ]
    return _write_segmentation(
        series, datasets, frames, segments, "spine-monai MRI segmentation bundle", series_number, out
    )


def _write_segmentation(
    source: str | os.PathLike,
    datasets: Sequence,
    pixels: np.ndarray,
    segments: Sequence[tuple[str, Code, Code]],
    model_name: str,
    series_number: int,
    out: str | os.PathLike,
) -> Path:
    """A binary DICOM SEG of ``datasets`` with one coded segment per ``(label, category, type)``, written to ``out``.

    ``pixels`` is either (frames, rows, columns, segments) of booleans or (frames, rows, columns) of segment numbers.
    """
    from spine_monai import __version__

    hd = _highdicom()
    from pydicom.uid import generate_uid

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=_coded(category),
            segmented_property_type=_coded(kind),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(__version__),
            anatomic_regions=[_coded(codes.SCT.Spine)],
        )
        for number, (label, category, kind) in enumerate(segments, start=1)
    ]
    seg = _build(
        source,
        "SEG",
        hd.seg.Segmentation,
        source_images=list(datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="spine-monai",
        manufacturer_model_name=model_name,
        software_versions=__version__,
        device_serial_number="none",
        series_description="spine-monai segmentation",
        omit_empty_frames=False,
    )
    return _save(seg, out)


def _build(source: str | os.PathLike, kind: str, factory, **kwargs):
    """``factory(**kwargs)``, a highdicom object, with the reason it refuses a source named with the source's file.

    Raises:
        DataError: when highdicom finds the source's header unfit (a missing type 2 attribute, an inconsistent
            geometry).
    """
    try:
        return factory(**kwargs)
    except (AttributeError, ValueError, TypeError) as e:
        raise DataError(source, f"cannot make a DICOM {kind} referencing it: {e}") from None


def _save(dataset, out: str | os.PathLike) -> Path:
    """Write ``dataset`` to ``out`` through a temporary file, so an interrupted write leaves no partial file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.tmp")
    dataset.save_as(str(partial))
    os.replace(partial, out)
    return out


def _finite(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# summary column -> concept, in degrees; the Cobb angle's end vertebrae are added as qualitative evaluations.
_ANGLES = {
    "cobb_angle_deg": codes.SCT.CobbAngle,
    "cobb_proximal_thoracic_deg": _local("COBB-PT", "Proximal thoracic Cobb angle"),
    "cobb_main_thoracic_deg": _local("COBB-MT", "Main thoracic Cobb angle"),
    "cobb_thoracolumbar_lumbar_deg": _local("COBB-TLL", "Thoracolumbar/lumbar Cobb angle"),
    "lordosis_angle_deg": _local("LORDOSIS", "Lumbar lordosis angle"),
}
# vertebra column -> concept, without units (ratios and the grade)
_VERTEBRA = {
    "ratio_anterior_posterior": _local("HR-AP", "Anterior to posterior height ratio"),
    "ratio_middle_posterior": _local("HR-MP", "Middle to posterior height ratio"),
    "ratio_neighbours": _local("HR-NB", "Height ratio to neighbouring vertebrae"),
    "height_loss": _local("HEIGHT-LOSS", "Vertebral height loss"),
    "genant_grade": _local("GENANT", "Genant semiquantitative grade"),
}
_END_VERTEBRA = {
    "cobb_upper": _local("COBB-UPPER", "Upper end vertebra"),
    "cobb_lower": _local("COBB-LOWER", "Lower end vertebra"),
}


def write_measurement_report(
    source: str | os.PathLike,
    rows: Sequence[Mapping[str, object]],
    out: str | os.PathLike,
    series_number: int = 902,
) -> Path:
    """Write the measurements of one film as a DICOM Comprehensive 3D SR (TID 1500, Measurement Report).

    Args:
        source: the film's DICOM file, the SR's evidence and the image each group refers to.
        rows: the film's rows of ``spine-monai measure``: one ``row_type="summary"`` row and its ``"vertebra"`` rows.
        out: the file to write.
        series_number: the SR series' number.

    Returns:
        ``out``.

    Raises:
        DataError: for a source that is not DICOM or lacks what the SR must carry over, or rows without a summary.
    """
    from spine_monai import __version__

    hd = _highdicom()
    from pydicom.uid import generate_uid

    ds = _read_source(source)
    summaries = [r for r in rows if r.get("row_type") == "summary"]
    if len(summaries) != 1:
        raise DataError(source, f"expected one summary row of spine-monai measure, got {len(summaries)}")
    summary = summaries[0]
    degree, no_units = codes.UCUM.Degree, codes.UCUM.NoUnits
    image = hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)
    algorithm = hd.sr.AlgorithmIdentification(name="spine-monai", version=__version__)
    groups = []
    for column, concept in _ANGLES.items():
        value = _finite(summary.get(column))
        if value is None:
            continue
        evaluations = []
        if column == "cobb_angle_deg":
            for end, concept_of_end in _END_VERTEBRA.items():
                level = summary.get(end)
                if isinstance(level, str) and level:
                    evaluations.append(
                        hd.sr.QualitativeEvaluation(name=_coded(concept_of_end), value=_coded(_local(level, level)))
                    )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=column),
                measurements=[
                    hd.sr.Measurement(name=_coded(concept), value=value, unit=degree, algorithm_id=algorithm)
                ],
                qualitative_evaluations=evaluations or None,
                source_images=[image],
            )
        )
    for row in rows:
        if row.get("row_type") != "vertebra":
            continue
        label = str(row.get("level") or f"instance {row.get('instance')}")
        measurements = [
            hd.sr.Measurement(name=_coded(concept), value=value, unit=no_units, algorithm_id=algorithm)
            for column, concept in _VERTEBRA.items()
            if (value := _finite(row.get(column))) is not None
        ]
        if measurements:
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"vertebra {label}"),
                    finding_sites=[hd.sr.FindingSite(anatomic_location=_coded(codes.SCT.Vertebra))],
                    measurements=measurements,
                    source_images=[image],
                )
            )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="spine-monai", model_name=f"spine-monai {__version__}"
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_coded(_local("SPINE-XR", "Spine radiograph measurement")),
        imaging_measurements=groups,
    )
    sr = _build(
        source,
        "SR",
        hd.sr.Comprehensive3DSR,
        evidence=[ds],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="spine-monai",
        series_description="spine-monai measurements",
    )
    return _save(sr, out)
