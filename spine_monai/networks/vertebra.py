"""A classifier that looks at each vertebral body on its own, then at the patient (multiple-instance learning).

The input is the output of :py:class:`spine_monai.transforms.VertebraPatchesd` for every view, concatenated on
the channel axis: per view, ``K`` film patches then ``C * K`` mask patches (``K = max_vertebrae``, ``C`` mask
structures, channel-major), so one tensor ``(B, V * (1 + C) * K, P, P)`` keeps MONAI's trainer,
``verify_net_in_out`` and TorchScript export unchanged.

Each body's patch (film and masks) goes through a small CNN with no early downsampling; an ``nn.Identity`` hook
point (``view_features.<VIEW>``, the GradCAM target, with the bodies on the batch axis) follows. The bodies of a
view are pooled with attention (Ilse et al., 2018), the padding patches (empty masks) left out, and the views'
vectors are concatenated into a fusion head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

from spine_monai.networks.dual_view import check_view_names, fusion_head, view_channels

__all__ = ["POOLING", "VertebraMILClassifier"]

POOLING = ("attention", "max")


def _encoder(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """Two convolutions at full patch resolution, then one per halving; 3x3, batch norm, ReLU."""
    layers: list[nn.Module] = []
    prev = in_channels
    for i, ch in enumerate(channels):
        if i > 0:
            layers.append(nn.MaxPool2d(2))
        layers.append(Convolution(2, prev, ch, kernel_size=3, act="RELU", norm="BATCH", bias=False))
        if i == 0:
            layers.append(Convolution(2, ch, ch, kernel_size=3, act="RELU", norm="BATCH", bias=False))
        prev = ch
    return nn.Sequential(*layers)


class VertebraMILClassifier(nn.Module):
    """Classify a patient from per-vertebra patches of several views.

    Example::

        net = VertebraMILClassifier(views=("AP", "LAT"), in_channels=2, max_vertebrae=20)
        logits = net(x)  # x: (B, 2 * 2 * 20, 32, 32) from VertebraPatchesd and ConcatItemsd

    Args:
        views: view names, in the order their channels are stacked; one view is single-view mode.
        in_channels: channels per body in each view: 1 (film) plus the mask structures; one number for all
            views or one per view. The first mask structure must be the vertebral bodies (it marks padding).
        max_vertebrae: patches per view (``K``).
        num_classes: output logits.
        channels: the encoder's widths; the feature map is ``P / 2 ** (len(channels) - 1)`` wide.
        pooling: ``"attention"`` (weights learnt per body) or ``"max"`` (feature-wise maximum over the bodies).
        shared_encoder: one body encoder for all views (needs equal channels per view).
        fusion_dim: size of the fusion head's hidden layer.
        dropout: dropout probability in the fusion head.

    Raises:
        ValueError: for empty or repeated views, a channel list of the wrong length, an unknown pooling, or a
            shared encoder with unequal channels per view.
    """

    def __init__(
        self,
        views: Sequence[str] = ("AP", "LAT"),
        in_channels: int | Sequence[int] = 2,
        max_vertebrae: int = 20,
        num_classes: int = 2,
        channels: Sequence[int] = (16, 32, 32, 64),
        pooling: str = "attention",
        shared_encoder: bool = False,
        fusion_dim: int = 64,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        views = check_view_names(views)
        per_body = view_channels(views, in_channels, shared_encoder)
        if min(per_body) < 2:
            raise ValueError(
                f"in_channels must give, for each of the views {views}, the film plus at least the vertebra mask "
                f"(>= 2), got {in_channels}"
            )
        if pooling not in POOLING:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")
        self.views = views
        self.per_body = per_body
        self.max_vertebrae = int(max_vertebrae)
        self.split_sizes = [c * self.max_vertebrae for c in per_body]
        self.pooling = pooling
        self.shared_encoder = bool(shared_encoder)
        feat = int(channels[-1])
        names = ["shared"] if self.shared_encoder else views
        self.encoders = nn.ModuleDict(
            {name: _encoder(per_body[0 if shared_encoder else i], channels) for i, name in enumerate(names)}
        )
        self.view_features = nn.ModuleDict({v: nn.Identity() for v in views})
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.attention = nn.ModuleDict(
            {v: nn.Sequential(nn.Linear(feat, feat // 2), nn.Tanh(), nn.Linear(feat // 2, 1)) for v in views}
        )
        self.fusion = fusion_head(feat * len(views), fusion_dim, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of a (B, sum(in_channels) * max_vertebrae, P, P) input."""
        if x.shape[1] != sum(self.split_sizes):
            raise ValueError(
                f"expected {sum(self.split_sizes)} input channels (views {self.views}, {self.per_body} channels per "
                f"body, {self.max_vertebrae} bodies), got {x.shape[1]}"
            )
        b, k = x.shape[0], self.max_vertebrae
        parts = torch.split(x, self.split_sizes, dim=1)
        bodies: list[torch.Tensor] = []
        valid: list[torch.Tensor] = []
        for i, part in enumerate(parts):
            # (B, C*K, P, P), channel-major -> (B*K, C, P, P): one body per row of the batch.
            body = part.reshape(b, self.per_body[i], k, x.shape[2], x.shape[3]).transpose(1, 2)
            bodies.append(body.reshape(b * k, self.per_body[i], x.shape[2], x.shape[3]))
            # Padding patches have an empty vertebra mask (the first mask channel).
            valid.append(body[:, :, 1].flatten(2).amax(2) > 0)
        feats: list[torch.Tensor] = []
        if self.shared_encoder:
            for encoder in self.encoders.values():
                feats = list(encoder(torch.cat(bodies, dim=0)).chunk(len(parts), dim=0))
        else:
            for i, encoder in enumerate(self.encoders.values()):
                feats.append(encoder(bodies[i]))
        vectors: list[torch.Tensor] = []
        for i, (hook, attention) in enumerate(zip(self.view_features.values(), self.attention.values())):
            f = self.pool(hook(feats[i])).reshape(b, k, -1)
            if self.pooling == "max":
                vectors.append(f.masked_fill(~valid[i][..., None], -1e4).amax(1))
            else:
                weights = attention(f).squeeze(-1).masked_fill(~valid[i], -1e4).softmax(1)
                vectors.append((weights[..., None] * f).sum(1))
        return self.fusion(torch.cat(vectors, dim=1))
