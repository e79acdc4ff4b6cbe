"""MONAI's residual UNet with a 1x1 convolution head, so that its last normalised layer is wider than the output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from torch import nn

__all__ = ["HeadUNet"]


class HeadUNet(nn.Module):
    """MONAI's ``UNet`` with residual units, ending in ``head_channels`` channels and a 1x1 convolution to the output.

    With residual units, MONAI's UNet normalises and activates (batch norm, PReLU) the output of its top transposed
    convolution, which has as many channels as the network has outputs. One output channel per structure makes that
    a bottleneck as narrow as the structure list: a rare structure's channel can die there (its batch norm and PReLU
    settle on a constant; seen on the LAT view's spinous process in three runs out of three). Here the UNet ends in
    ``head_channels`` channels, at least as many as the outputs, and a 1x1 convolution maps them to the structures.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels, one per structure.
        channels: MONAI ``UNet``'s channels per level.
        strides: MONAI ``UNet``'s strides.
        num_res_units: residual units per level (at least 1; with 0 the UNet has no such bottleneck, use it
            directly).
        head_channels: channels the UNet ends in; raised to ``out_channels`` when smaller.
        kwargs: further arguments of MONAI's ``UNet`` (``norm``, ``act``, ``dropout``, ``kernel_size``, ...).

    Returns:
        logits of shape ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        num_res_units: int = 2,
        head_channels: int = 8,
        **kwargs,
    ) -> None:
        super().__init__()
        if num_res_units < 1:
            raise ValueError(f"HeadUNet is for residual units (num_res_units >= 1), got {num_res_units}; use UNet")
        width = max(int(head_channels), int(out_channels))
        self.unet = UNet(spatial_dims, in_channels, width, channels, strides, num_res_units=num_res_units, **kwargs)
        self.head = Convolution(spatial_dims, width, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.unet(x))
