"""File I/O, the layouts, datalists, input screening and the classifier's inputs."""

from spine_monai.data.datalist import assign_splits, read_datalist, resolve_paths, select_records, write_datalist
from spine_monai.data.dataset import CacheDataset
from spine_monai.data.inputs import InferenceInputs, screen_records
from spine_monai.data.io import image_size, read_mask, read_radiograph, write_mask
from spine_monai.data.mri import (
    MIDAS_LABELS,
    build_mri_datalist,
    mri_inference_inputs,
    mri_records,
    read_volume,
    scan_mri_tree,
)
from spine_monai.data.xray import (
    ScanResult,
    build_xray_datalist,
    scan_xray_tree,
    xray_inference_inputs,
    xray_view_records,
)

__all__ = [
    "CacheDataset",
    "MIDAS_LABELS",
    "InferenceInputs",
    "ScanResult",
    "assign_splits",
    "build_mri_datalist",
    "build_xray_datalist",
    "image_size",
    "read_datalist",
    "mri_inference_inputs",
    "mri_records",
    "read_mask",
    "read_radiograph",
    "read_volume",
    "resolve_paths",
    "scan_mri_tree",
    "scan_xray_tree",
    "screen_records",
    "select_records",
    "write_datalist",
    "write_mask",
    "xray_inference_inputs",
    "xray_view_records",
]
