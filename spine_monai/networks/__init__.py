"""Networks MONAI lacks: the multi-view classifier of whole films, the vertebra-level one, and a headed UNet."""

from spine_monai.networks.dual_view import BACKBONES, DualViewClassifier, build_encoder, load_encoder_weights
from spine_monai.networks.factory import patient_classifier
from spine_monai.networks.unet import HeadUNet
from spine_monai.networks.vertebra import POOLING, VertebraMILClassifier

__all__ = [
    "BACKBONES",
    "POOLING",
    "DualViewClassifier",
    "HeadUNet",
    "VertebraMILClassifier",
    "build_encoder",
    "load_encoder_weights",
    "patient_classifier",
]
