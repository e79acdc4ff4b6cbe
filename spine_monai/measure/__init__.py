"""Numbers from vertebra masks: body instances, level names, corners, heights, Genant grades and spine angles.

Typical use is :func:`measure_spine` on one mask, or :func:`measure_tree` on a whole ELL888-layout tree::

    from spine_monai.measure import measure_spine
    m = measure_spine(mask, "LAT")
    m.lordosis_angle, [(v.level, v.genant_grade) for v in m.vertebrae]
"""

from __future__ import annotations

from spine_monai.measure.cobb import REGIONAL_COBB, RegionalCobb, cobb_smape, regional_cobb_angles
from spine_monai.measure.command import (
    SUMMARY_COLUMNS,
    VERTEBRA_COLUMNS,
    draw_overlay,
    measure_tree,
    overlay_title,
)
from spine_monai.measure.geometry import (
    GENANT_THRESHOLDS,
    VertebraGeometry,
    endplate_angle,
    fit_quadrilateral,
    genant_grade,
    height_loss,
    neighbour_ratio,
    vertebra_geometry,
)
from spine_monai.measure.instances import Instances, VertebraInstance, fit_spine_curve, separate_instances
from spine_monai.measure.levels import LEVELS, LevelAssignment, assign_levels
from spine_monai.measure.spine import (
    SpineMeasurement,
    VertebraMeasurement,
    cobb_angle,
    listhesis_offsets,
    lordosis_angle,
    measure_spine,
)

__all__ = [
    "GENANT_THRESHOLDS",
    "LEVELS",
    "REGIONAL_COBB",
    "SUMMARY_COLUMNS",
    "VERTEBRA_COLUMNS",
    "Instances",
    "LevelAssignment",
    "RegionalCobb",
    "SpineMeasurement",
    "VertebraGeometry",
    "VertebraInstance",
    "VertebraMeasurement",
    "assign_levels",
    "cobb_angle",
    "cobb_smape",
    "draw_overlay",
    "endplate_angle",
    "fit_quadrilateral",
    "fit_spine_curve",
    "genant_grade",
    "height_loss",
    "listhesis_offsets",
    "lordosis_angle",
    "measure_spine",
    "measure_tree",
    "neighbour_ratio",
    "overlay_title",
    "regional_cobb_angles",
    "separate_instances",
    "vertebra_geometry",
]
