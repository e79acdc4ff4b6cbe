"""spine_monai: MONAI-based segmentation, classification and measurement of spine X-ray and MRI."""

import importlib

__version__ = "0.1.14"

_SUBMODULES = (
    "data",
    "errors",
    "handlers",
    "losses",
    "measure",
    "metrics",
    "networks",
    "report",
    "synthetic",
    "transforms",
    "workflow",
)


def __getattr__(name: str):
    # Bundle configs write `$import spine_monai` and then `spine_monai.data.…`; load subpackages on first use
    # so that the command line starts without importing torch-heavy modules it does not need.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
