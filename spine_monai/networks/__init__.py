"""Networks MONAI lacks: the multi-view classifier."""

from spine_monai.networks.dual_view import BACKBONES, DualViewClassifier, build_encoder, load_encoder_weights

__all__ = ["BACKBONES", "DualViewClassifier", "build_encoder", "load_encoder_weights"]
