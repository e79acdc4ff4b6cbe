"""Layout readers, datalists, input validation and synthetic data generators."""

from spine_monai.data.datalist import assign_splits, read_datalist, resolve_paths, select_records, write_datalist
from spine_monai.data.io import image_size, read_mask, read_radiograph, write_mask
from spine_monai.data.xray import (
    InferenceInputs,
    ScanResult,
    build_xray_datalist,
    scan_xray_tree,
    xray_inference_inputs,
    xray_view_records,
)

__all__ = [
    "InferenceInputs",
    "ScanResult",
    "assign_splits",
    "build_xray_datalist",
    "image_size",
    "read_datalist",
    "read_mask",
    "read_radiograph",
    "resolve_paths",
    "scan_xray_tree",
    "select_records",
    "write_datalist",
    "write_mask",
    "xray_inference_inputs",
    "xray_view_records",
]
