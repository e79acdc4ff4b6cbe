"""spine_monai: MONAI-based segmentation, classification and measurement of spine X-ray and MRI."""

__version__ = "0.1.0"
