"""Static HTML reports of evaluations and measurements.

Typical use::

    from spine_monai.report import build_report
    build_report(["runs/ap/eval", "runs/lat/eval", "runs/cls/eval"], "report.html", measure_csv="measure.csv")

or ``spine-monai report --eval-dir runs/ap/eval --eval-dir runs/cls/eval --measure measure.csv --out report.html``.
"""

from __future__ import annotations

from spine_monai.report.html import DEFAULT_TITLE, build_report
from spine_monai.report.inputs import KINDS, EvalDir, detect_eval_dir, read_measure_csv

__all__ = [
    "DEFAULT_TITLE",
    "KINDS",
    "EvalDir",
    "build_report",
    "detect_eval_dir",
    "read_measure_csv",
]
