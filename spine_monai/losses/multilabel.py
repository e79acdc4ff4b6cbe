"""A loss for overlapping structures: one sigmoid channel each, with extra weight and a skeleton term for lines.

MONAI's ``DiceCELoss(sigmoid=True)`` switches to a softmax cross-entropy whenever there is more than one
channel, which would make overlapping masks (a pedicle inside a vertebra) compete. This loss keeps every
channel binary: sigmoid Dice plus binary cross-entropy per channel, and on the channels that are thin lines a
skeleton-recall term (Kirchhoff et al., "Skeleton Recall Loss for Connectivity Conserving and Resource
Efficient Segmentation of Thin Tubular Structures", ECCV 2024): the soft recall of the prediction over the
truth's skeleton, so that a gap in a line costs as much as its length, not its few pixels. Unlike soft clDice,
the skeleton is taken of the binary truth, without gradients, which costs milliseconds instead of seconds per
batch on a CPU.

On channels of separate bodies (vertebrae) the thin background between neighbours decides whether a measurement
finds one body or two: a mask that bridges a disc merges two vertebrae. As the U-Net paper weighted the borders
between touching cells, the BCE of those gap pixels is weighted up (``gap_channels``, ``gap_weight``): the gaps are
the background pixels that a morphological closing of the truth fills, found on each batch's augmented truth
(max-pooling, about 3 ms a batch of eight 384x256 masks on a CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceLoss
from scipy import ndimage
from skimage.morphology import skeletonize

__all__ = ["MultiLabelDiceBCELoss", "gap_pixels", "tubed_skeleton"]


def tubed_skeleton(masks: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Skeletons of binary masks, dilated by ``radius`` pixels within the mask (a thin tube along each centreline).

    Args:
        masks: (B, C, H, W) binary tensor.
        radius: dilation in pixels; 1 tolerates the half-pixel placement of a skeleton.

    Returns:
        a float tensor of the same shape and device, without gradient.
    """
    arr = masks.detach().cpu().numpy() > 0.5
    out = np.zeros(arr.shape, dtype=np.float32)
    structure = ndimage.generate_binary_structure(2, 1)
    for b in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            if arr[b, c].any():
                skel = skeletonize(arr[b, c])
                tube = ndimage.binary_dilation(skel, structure, iterations=radius) if radius > 0 else skel
                # Inside the truth only, so that a perfect prediction has a recall of exactly 1.
                out[b, c] = tube & arr[b, c]
    return torch.from_numpy(out).to(masks.device)


def gap_pixels(masks: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """The background between nearby bodies: what a closing by a square of half-width ``radius`` adds to a mask.

    Args:
        masks: (B, C, H, W) binary tensor.
        radius: the square's half-width in pixels; gaps narrower than about twice it are found.

    Returns:
        a float tensor of the same shape, device and dtype, 1 on gap pixels, without gradient.
    """
    x = (masks.detach() > 0.5).to(masks.dtype if masks.is_floating_point() else torch.float32)
    k = 2 * radius + 1

    def dilate(t: torch.Tensor) -> torch.Tensor:
        # A square is separable: a row pass, then a column pass, instead of one k x k window.
        t = F.max_pool2d(t, (k, 1), stride=1, padding=(radius, 0))
        return F.max_pool2d(t, (1, k), stride=1, padding=(0, radius))

    # max_pool pads with -inf, so the erosion treats the border as foreground: bodies at the edge close as inside.
    closed = -dilate(-dilate(x))
    return (closed - x).clamp_min(0)


class MultiLabelDiceBCELoss(nn.Module):
    """Sigmoid Dice + BCE per channel, channel-weighted, with a skeleton-recall term on thin channels.

    Args:
        channel_weights: one weight per channel, applied to both the Dice and the BCE of that channel before
            averaging over channels; give thin structures more (e.g. 2.0) so their few pixels are not outvoted.
        pos_weight: BCE weight of foreground pixels, per channel or shared; a sparse line of ~1% of the
            pixels learns faster with a foreground weight above 1.
        skeleton_channels: indices of channels that get the skeleton-recall term (the thin lines).
        lambda_dice: weight of the Dice term.
        lambda_bce: weight of the BCE term.
        lambda_skeleton: weight of the skeleton-recall term.
        skeleton_radius: dilation of the truth's skeleton, in pixels.
        gap_channels: indices of channels of separate bodies whose gaps get ``gap_weight`` (the vertebrae).
        gap_weight: extra BCE weight of a gap pixel (its weight is ``1 + gap_weight``); 0 turns it off.
        gap_radius: half-width in pixels of the closing that finds the gaps (see :func:`gap_pixels`).

    Returns:
        the scalar loss, from logits of shape (B, C, H, W) and 0/1 targets of the same shape.
    """

    def __init__(
        self,
        channel_weights: Sequence[float] | None = None,
        pos_weight: float | Sequence[float] = 1.0,
        skeleton_channels: Sequence[int] = (),
        lambda_dice: float = 1.0,
        lambda_bce: float = 1.0,
        lambda_skeleton: float = 1.0,
        skeleton_radius: int = 1,
        gap_channels: Sequence[int] = (),
        gap_weight: float = 0.0,
        gap_radius: int = 5,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, reduction="none")
        weights = torch.as_tensor(channel_weights if channel_weights is not None else [], dtype=torch.float32)
        self.register_buffer("channel_weights", weights)
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1))
        self.skeleton_channels = [int(c) for c in skeleton_channels]
        self.skeleton_radius = skeleton_radius
        self.lambda_dice, self.lambda_bce, self.lambda_skeleton = lambda_dice, lambda_bce, lambda_skeleton
        self.gap_channels = [int(c) for c in gap_channels]
        self.gap_weight, self.gap_radius = float(gap_weight), int(gap_radius)

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
        if self.gap_channels and self.gap_weight > 0:
            idx = self.gap_channels
            bce[:, idx] = bce[:, idx] * (1.0 + self.gap_weight * gap_pixels(target[:, idx], self.gap_radius))
        bce = bce.mean(dim=[0, *range(2, input.ndim)])
        # Average over channels, not over weights: extra weight on the lines must not take gradient from the rest.
        loss = self.lambda_dice * (w * dice).mean() + self.lambda_bce * (w * bce).mean()
        if self.skeleton_channels and self.lambda_skeleton > 0:
            idx = self.skeleton_channels
            skeleton = tubed_skeleton(target[:, idx], self.skeleton_radius).to(input.dtype)
            length = skeleton.sum(dim=[*range(2, input.ndim)])
            found = (torch.sigmoid(input[:, idx]) * skeleton).sum(dim=[*range(2, input.ndim)])
            present = length > 0
            if present.any():
                recall = found[present] / length[present]
                loss = loss + self.lambda_skeleton * (1.0 - recall).mean()
        return loss
