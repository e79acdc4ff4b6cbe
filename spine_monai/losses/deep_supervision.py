"""Deep supervision for networks that return their heads stacked in one tensor, such as MONAI's DynUNet."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss

__all__ = ["StackedDeepSupervisionLoss"]


class StackedDeepSupervisionLoss(DeepSupervisionLoss):
    """:py:class:`monai.losses.DeepSupervisionLoss` that also accepts DynUNet's stacked training output.

    In training mode DynUNet returns (B, 1 + deep_supr_num, C, H, W); MONAI's wrapper expects a list of
    heads, and a plain tensor would reach the inner loss with an extra dimension. This unbinds dim 1 when
    the input has one more dimension than the target. Arguments are those of ``DeepSupervisionLoss``.
    """

    def forward(self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1:
            input = list(torch.unbind(input, dim=1))
        return super().forward(input, target)
