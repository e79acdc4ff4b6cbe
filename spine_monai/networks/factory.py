"""The patient classifier a bundle config asks for: whole films or vertebra patches."""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch import nn

from spine_monai.networks.dual_view import DualViewClassifier
from spine_monai.networks.vertebra import VertebraMILClassifier

__all__ = ["patient_classifier"]


def patient_classifier(
    views: Sequence[str] = ("AP", "LAT"),
    in_channels: int | Sequence[int] = 1,
    num_classes: int = 2,
    vertebra_level: bool = False,
    backbone: str = "resnet18",
    shared_encoder: bool = False,
    dropout: float = 0.3,
    pretrained_path: str | os.PathLike | None = None,
    max_vertebrae: int = 20,
    **kwargs,
) -> nn.Module:
    """A :py:class:`~spine_monai.networks.DualViewClassifier` of whole films, or, with ``vertebra_level``, a
    :py:class:`~spine_monai.networks.VertebraMILClassifier` of per-vertebra patches.

    Args:
        views, in_channels, num_classes, shared_encoder, dropout: as for both networks (``in_channels`` counts
            the channels of one view, or of one body in the vertebra-level network).
        vertebra_level: build the vertebra-level network.
        backbone, pretrained_path: the film network's encoder; the vertebra-level network has its own small
            encoder and refuses ``pretrained_path``.
        max_vertebrae: patches per view of the vertebra-level network.
        kwargs: further arguments of the chosen network (e.g. ``view_dim`` or ``pooling``); an argument the
            network does not take is an error.

    Returns:
        the network, randomly initialised (or with the local encoder weights).

    Raises:
        ValueError: for ``pretrained_path`` with the vertebra-level network, and the networks' own errors.
    """
    common = {"views": views, "in_channels": in_channels, "num_classes": num_classes, "dropout": dropout}
    common.update(shared_encoder=shared_encoder, **kwargs)
    if vertebra_level:
        if pretrained_path:
            raise ValueError(
                "pretrained_path loads film-encoder weights; the vertebra-level classifier has its own small encoder "
                "and takes none"
            )
        return VertebraMILClassifier(max_vertebrae=max_vertebrae, **common)
    return DualViewClassifier(backbone=backbone, pretrained_path=pretrained_path, **common)
