"""A classifier that reads several radiographic views of one patient (AP and LAT) and gives one answer.

The views arrive as ONE tensor, stacked on the channel axis in the order of ``views``: (B, V*C, H, W), each view
with C channels (one grey channel, plus optional mask channels). A single input keeps MONAI's
``SupervisedTrainer``, ``verify_net_in_out`` and TorchScript export unchanged.

Each view goes through a convolutional encoder taken from a MONAI backbone (its own, or one shared by all
views), then an ``nn.Identity`` hook point (``view_features.<VIEW>``, the target layer for GradCAM), global average
pooling and a small dense layer; the per-view vectors are concatenated and a fusion head gives the class logits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.nets import DenseNet121, EfficientNetBN, resnet18, resnet34, resnet50
from torch import nn

from spine_monai.workflow.checkpoint import load_checkpoint

__all__ = ["BACKBONES", "DualViewClassifier", "build_encoder", "load_encoder_weights"]

# Backbone name -> channels of the feature map its encoder yields.
BACKBONES: dict[str, int] = {
    "densenet121": 1024,
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "efficientnet-b0": 1280,
}
# Keys of a whole classifier's head that an encoder does not have; dropped when loading encoder weights.
_HEAD_PREFIXES = ("fc.", "class_layers.", "_fc.")


class _ResNetEncoder(nn.Module):
    """A MONAI ResNet without its pooling and fully connected layer; parameter names are the ResNet's own."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act, self.maxpool = net.conv1, net.bn1, net.act, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _DenseNetEncoder(nn.Module):
    """A MONAI DenseNet's ``features`` and the activation its classifier applies before pooling."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = net.features
        # DenseNet's own ReLU is in-place; GradCAM needs the feature map untouched, so use a fresh one.
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.features(x))


class _EfficientNetEncoder(nn.Module):
    """A MONAI EfficientNet up to its head convolution (stem, blocks, head), without pooling and classifier."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self._conv_stem_padding, self._conv_stem, self._bn0 = net._conv_stem_padding, net._conv_stem, net._bn0
        self._blocks = net._blocks
        self._conv_head_padding, self._conv_head, self._bn1 = net._conv_head_padding, net._conv_head, net._bn1
        self._swish = net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(self._conv_stem_padding(x))))
        x = self._blocks(x)
        return self._swish(self._bn1(self._conv_head(self._conv_head_padding(x))))


def build_encoder(backbone: str, in_channels: int) -> nn.Module:
    """A randomly initialised 2D encoder that maps (B, in_channels, H, W) to a feature map at 1/32 resolution.

    Nothing is ever downloaded; use :func:`load_encoder_weights` for local pretrained weights.

    Args:
        backbone: one of :data:`BACKBONES`.
        in_channels: input channels of one view.

    Returns:
        the encoder; its output has ``BACKBONES[backbone]`` channels.

    Raises:
        ValueError: for an unknown backbone name.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if backbone == "densenet121":
        return _DenseNetEncoder(DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1))
    if backbone.startswith("efficientnet"):
        net = EfficientNetBN(backbone, pretrained=False, spatial_dims=2, in_channels=in_channels, num_classes=1)
        return _EfficientNetEncoder(net)
    factory = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}[backbone]
    # MONAI's ResNet defaults to a stride-1 first convolution (made for small 3D volumes); a 2D film wants the
    # usual stride 2, which also keeps the feature map at 1/32 of the input like the other backbones.
    net = factory(pretrained=False, spatial_dims=2, n_input_channels=in_channels, conv1_t_stride=2, feed_forward=False)
    return _ResNetEncoder(net)


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Load local pretrained weights into an encoder made by :func:`build_encoder`.

    The file holds a state dict of the encoder or of the whole MONAI backbone it came from (for instance a
    ``DenseNet121`` or ``resnet18`` saved with ``torch.save(net.state_dict(), path)``), possibly under a
    ``"state_dict"`` or ``"model"`` key and with DDP's ``module.`` prefix. The backbone's classifier
    (``fc``, ``class_layers``) is ignored. It is read with ``torch.load(weights_only=True)``
    (:func:`spine_monai.workflow.load_checkpoint`).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: for a file ``torch.load(weights_only=True)`` refuses, or listing the missing and unexpected
            keys, or the shapes that differ (e.g. weights made for one input channel loaded into a mask-guided
            encoder).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained encoder weights not found: {path}")
    state = load_checkpoint(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)}, encoder {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        lines = [f"{path}: the weights do not fit the encoder"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                lines.append(f"  {title}: {shown}")
        raise ValueError("\n".join(lines))
    encoder.load_state_dict(state, strict=True)


def check_view_names(views: str | Sequence[str]) -> list[str]:
    """The view names as a list; one name is one view.

    Raises:
        ValueError: for no view or a repeated one.
    """
    views = [views] if isinstance(views, str) else [str(v) for v in views]
    if not views or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct and non-empty, got {views}")
    return views


def view_channels(views: Sequence[str], in_channels: int | Sequence[int], shared_encoder: bool) -> list[int]:
    """Input channels per view: one number for every view, or one per view.

    Raises:
        ValueError: for a list of the wrong length, or unequal channels with a shared encoder.
    """
    channels = [int(in_channels)] * len(views) if isinstance(in_channels, int) else [int(c) for c in in_channels]
    if len(channels) != len(views):
        raise ValueError(f"{len(channels)} channel counts for {len(views)} views {views}")
    if shared_encoder and len(set(channels)) != 1:
        raise ValueError(
            f"a shared encoder needs the same channels in every view, got {dict(zip(views, channels, strict=True))}"
        )
    return channels


def fusion_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """The late-fusion head of the patient classifiers: Linear, ReLU, dropout, Linear to the class logits."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class DualViewClassifier(nn.Module):
    """Classify a patient from several views stacked on the channel axis.

    Example::

        net = DualViewClassifier(views=("AP", "LAT"), in_channels=1, backbone="resnet18")
        logits = net(torch.cat([ap, lat], dim=1))  # (B, 2)

    GradCAM targets ``view_features.AP`` or ``view_features.LAT``: the encoder's feature map of that view,
    also when the encoder is shared.

    Args:
        views: view names, in the order their channels are stacked; one view is single-view mode (ablation).
        in_channels: channels per view (1 grey channel plus mask channels), one number for all or one per view.
        num_classes: output logits.
        backbone: ``"densenet121"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"efficientnet-b0"``
            (MONAI implementations, randomly initialised).
        shared_encoder: one encoder for all views (fewer parameters; needs equal channels per view) instead of
            one per view.
        view_dim: size of each view's dense layer.
        fusion_dim: size of the fusion head's hidden layer.
        dropout: dropout probability in the dense layers.
        pretrained_path: optional local file of encoder weights (see :func:`load_encoder_weights`), loaded into
            every encoder. Nothing is ever downloaded.

    Raises:
        ValueError: for an unknown backbone, repeated or empty views, a channel list of the wrong length, or a
            shared encoder with unequal channels per view.
    """

    def __init__(
        self,
        views: Sequence[str] = ("AP", "LAT"),
        in_channels: int | Sequence[int] = 1,
        num_classes: int = 2,
        backbone: str = "resnet18",
        shared_encoder: bool = False,
        view_dim: int = 256,
        fusion_dim: int = 128,
        dropout: float = 0.3,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        views = check_view_names(views)
        channels = view_channels(views, in_channels, shared_encoder)
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        self.views = views
        self.split_sizes = channels
        self.n_views = len(views)
        self.shared_encoder = bool(shared_encoder)
        names = ["shared"] if self.shared_encoder else views
        self.encoders = nn.ModuleDict(
            {name: build_encoder(backbone, channels[0 if shared_encoder else i]) for i, name in enumerate(names)}
        )
        if pretrained_path:
            for encoder in self.encoders.values():
                load_encoder_weights(encoder, pretrained_path)
        feat = BACKBONES[backbone]
        self.view_features = nn.ModuleDict({v: nn.Identity() for v in views})
        self.view_heads = nn.ModuleDict(
            {
                v: nn.Sequential(
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(feat, view_dim), nn.ReLU(), nn.Dropout(dropout)
                )
                for v in views
            }
        )
        self.fusion = fusion_head(view_dim * len(views), fusion_dim, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of a (B, sum(in_channels), H, W) input."""
        if x.shape[1] != sum(self.split_sizes):
            raise ValueError(
                f"expected {sum(self.split_sizes)} input channels (views {self.views}, {self.split_sizes} each), "
                f"got {x.shape[1]}"
            )
        parts = torch.split(x, self.split_sizes, dim=1)
        feats: list[torch.Tensor] = []
        if self.shared_encoder:
            # One pass over the views stacked on the batch axis: the same weights see every view.
            for encoder in self.encoders.values():
                feats = list(encoder(torch.cat(parts, dim=0)).chunk(self.n_views, dim=0))
        else:
            for i, encoder in enumerate(self.encoders.values()):
                feats.append(encoder(parts[i]))
        hooked: list[torch.Tensor] = []
        for i, hook in enumerate(self.view_features.values()):
            hooked.append(hook(feats[i]))
        vectors: list[torch.Tensor] = []
        for i, head in enumerate(self.view_heads.values()):
            vectors.append(head(hooked[i]))
        return self.fusion(torch.cat(vectors, dim=1))
