"""Names of the ELL888 X-ray layout: classes, views, images and per-structure masks.

The layout is::

    <root>/{Normal,Damaged}/ID (<n>)/AP/AP.jpg          + Ap_Vertebra.png, Ap_Pedicle.png, Ap_Spinous_Process.png
    <root>/{Normal,Damaged}/ID (<n>)/LAT/LAT.jpg        + Lat_Vertebra.png, Lat_Disk_Height.png,
                                                          Lat_Anterior_Vertebral_Line.png,
                                                          Lat_Posterior_Vertebral_Line.png, Lat_Spinous_Process.png

``AP.dcm`` / ``LAT.dcm`` (CR or DX DICOM) may stand in for the JPEG.
"""

from __future__ import annotations

import re

__all__ = [
    "ALL_STRUCTURES",
    "CLASSES",
    "CLASS_INDEX",
    "IMAGE_EXTENSIONS",
    "LINE_STRUCTURES",
    "MASK_EXTENSION",
    "PATIENT_DIR_PATTERN",
    "STRUCTURES",
    "VIEWS",
    "patient_sort_key",
    "view_of_structure",
]

CLASSES: tuple[str, ...] = ("Normal", "Damaged")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
VIEWS: tuple[str, ...] = ("AP", "LAT")

STRUCTURES: dict[str, tuple[str, ...]] = {
    "AP": ("Ap_Vertebra", "Ap_Pedicle", "Ap_Spinous_Process"),
    "LAT": (
        "Lat_Vertebra",
        "Lat_Disk_Height",
        "Lat_Anterior_Vertebral_Line",
        "Lat_Posterior_Vertebral_Line",
        "Lat_Spinous_Process",
    ),
}
ALL_STRUCTURES: tuple[str, ...] = STRUCTURES["AP"] + STRUCTURES["LAT"]
# ~3 px wide on ~1900x2900 films: they need thin-preserving resizing and tolerance metrics.
LINE_STRUCTURES: tuple[str, ...] = ("Lat_Anterior_Vertebral_Line", "Lat_Posterior_Vertebral_Line")

# Searched in this order, so a JPEG wins over a DICOM of the same view only if both exist (reported).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".dcm")
MASK_EXTENSION = ".png"

PATIENT_DIR_PATTERN = re.compile(r"^ID \((\d+)\)$")


def view_of_structure(structure: str) -> str:
    """Return the view ("AP" or "LAT") a structure name belongs to.

    Args:
        structure: a structure name such as ``"Ap_Vertebra"``.

    Returns:
        "AP" or "LAT".

    Raises:
        ValueError: when the name belongs to no view.
    """
    for view, names in STRUCTURES.items():
        if structure in names:
            return view
    raise ValueError(f"unknown structure {structure!r}; known structures are {', '.join(ALL_STRUCTURES)}.")


def patient_sort_key(patient_dir_name: str) -> tuple[int, str]:
    """Sort ``ID (2)`` before ``ID (10)``, and names that do not match after all that do."""
    m = PATIENT_DIR_PATTERN.match(patient_dir_name)
    return (int(m.group(1)), "") if m else (1 << 62, patient_dir_name)
