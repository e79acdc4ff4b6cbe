"""Networks MONAI lacks: the multi-view classifier of whole films and the vertebra-level one."""

from spine_monai.networks.dual_view import BACKBONES, DualViewClassifier, build_encoder, load_encoder_weights
from spine_monai.networks.factory import patient_classifier
from spine_monai.networks.vertebra import POOLING, VertebraMILClassifier

__all__ = [
    "BACKBONES",
    "POOLING",
    "DualViewClassifier",
    "VertebraMILClassifier",
    "build_encoder",
    "load_encoder_weights",
    "patient_classifier",
]
