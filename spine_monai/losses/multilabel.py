"""A loss for overlapping structures: one sigmoid channel each, with extra weight and a skeleton term for lines.

MONAI's ``DiceCELoss(sigmoid=True)`` switches to a softmax cross-entropy whenever there is more than one
channel, which would make overlapping masks (a pedicle inside a vertebra) compete. This loss keeps every
channel binary: sigmoid Dice plus binary cross-entropy per channel, and optionally MONAI's soft clDice on
the channels that are thin lines, so that a broken line costs more than a thin one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceLoss, SoftclDiceLoss

__all__ = ["MultiLabelDiceBCELoss"]


class MultiLabelDiceBCELoss(nn.Module):
    """Sigmoid Dice + BCE per channel, channel-weighted, with an optional clDice term on thin channels.

    Args:
        channel_weights: one weight per channel, applied to both the Dice and the BCE of that channel before
            averaging over channels; give thin structures more (e.g. 2.0) so their few pixels are not outvoted.
        pos_weight: BCE weight of foreground pixels, per channel or shared; a sparse line of ~1% of the
            pixels learns faster with a foreground weight above 1.
        cldice_channels: indices of channels that get the soft clDice term (skeleton recall/precision).
        lambda_dice: weight of the Dice term.
        lambda_bce: weight of the BCE term.
        lambda_cldice: weight of the clDice term.
        cldice_iters: soft-skeleton iterations; about the half-width in pixels of the thickest line.

    Returns:
        the scalar loss, from logits of shape (B, C, H, W) and 0/1 targets of the same shape.
    """

    def __init__(
        self,
        channel_weights: Sequence[float] | None = None,
        pos_weight: float | Sequence[float] = 1.0,
        cldice_channels: Sequence[int] = (),
        lambda_dice: float = 1.0,
        lambda_bce: float = 1.0,
        lambda_cldice: float = 0.5,
        cldice_iters: int = 3,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, reduction="none")
        self.cldice = SoftclDiceLoss(iter_=cldice_iters, sigmoid=True)
        weights = torch.as_tensor(channel_weights if channel_weights is not None else [], dtype=torch.float32)
        self.register_buffer("channel_weights", weights)
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1))
        self.cldice_channels = [int(c) for c in cldice_channels]
        self.lambda_dice, self.lambda_bce, self.lambda_cldice = lambda_dice, lambda_bce, lambda_cldice

    def _weights(self, n: int, ref: torch.Tensor) -> torch.Tensor:
        if self.channel_weights.numel() == 0:
            return torch.ones(n, device=ref.device)
        if self.channel_weights.numel() != n:
            raise ValueError(f"{self.channel_weights.numel()} channel weights for {n} output channels")
        return self.channel_weights.to(ref.device)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(f"logits {tuple(input.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.to(input.dtype)
        n = input.shape[1]
        w = self._weights(n, input)
        dice = self.dice(input, target).reshape(input.shape[0], n).mean(0)
        pos = self.pos_weight.to(input.device)
        pos = pos.expand(n) if pos.numel() == 1 else pos
        shape = (1, n) + (1,) * (input.ndim - 2)
        bce = F.binary_cross_entropy_with_logits(input, target, pos_weight=pos.view(shape), reduction="none")
        bce = bce.mean(dim=[0, *range(2, input.ndim)])
        # Average over channels, not over weights: extra weight on the lines must not take gradient from the rest.
        loss = self.lambda_dice * (w * dice).mean() + self.lambda_bce * (w * bce).mean()
        if self.cldice_channels and self.lambda_cldice > 0:
            idx = self.cldice_channels
            loss = loss + self.lambda_cldice * self.cldice(input[:, idx], target[:, idx])
        return loss
