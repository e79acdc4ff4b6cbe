"""One small window per vertebral body: the input of the vertebra-level classifier.

A fracture or a slip is a change in the shape of one body among the dozen or more on a film. Resized whole, the
film leaves a body 10-20 px tall, and a CNN's stride-4 stem reduces a 25 % wedge to under one feature cell. Cut
out around each body instead (from a predicted vertebra mask), every body fills its own patch, and one window
size per film keeps the bodies' relative sizes: a collapsed body stays shorter than its neighbours.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, ensure_tuple

from spine_monai.data.io import read_mask
from spine_monai.errors import DataError

__all__ = ["VertebraPatches", "VertebraPatchesd"]


class VertebraPatches(Transform):
    """Cut a square window around each vertebral body of a film and its masks, in spine order, top to bottom.

    The bodies are the instances of the vertebra mask (:func:`spine_monai.measure.separate_instances`). Each
    window is centred on the spine curve fitted through all the bodies, at the body's level (a listhesis leaves
    the slipped body off-centre); its side is ``window`` times the median body height of the film, so it holds
    the body and the edges of its neighbours. Each window is
    resampled to ``patch_size`` (area interpolation when shrinking, bilinear when enlarging; outside the film is
    0). Unused patches, up to ``max_vertebrae``, are all zero; an empty mask patch marks them for the network.

    Args:
        patch_size: side of each output patch, in pixels.
        max_vertebrae: patches per film; a film with more bodies is refused, never cut short.
        window: window side as a multiple of the median body height.
        mask_channel: the channel of ``masks`` that holds the vertebral bodies.

    Raises:
        ValueError: for a non-positive ``patch_size``, ``max_vertebrae`` or ``window``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, patch_size: int = 32, max_vertebrae: int = 20, window: float = 2.2, mask_channel: int = 0
    ) -> None:
        if int(patch_size) < 4 or int(max_vertebrae) < 1 or not float(window) > 0:
            raise ValueError(
                f"patch_size must be >= 4, max_vertebrae >= 1 and window > 0, got {patch_size}, {max_vertebrae}, "
                f"{window}"
            )
        self.patch_size = int(patch_size)
        self.max_vertebrae = int(max_vertebrae)
        self.window = float(window)
        self.mask_channel = int(mask_channel)

    def windows(self, mask: np.ndarray, name: str = "mask") -> np.ndarray:
        """The windows of a vertebra mask: ``(n, 3)`` rows ``[centre_x, centre_y, side]`` in film pixels.

        Raises:
            DataError: naming ``name`` when the mask holds no body, is not a vertebra mask, or holds more than
                ``max_vertebrae`` bodies.
        """
        from spine_monai.measure import separate_instances

        found = separate_instances(np.asarray(mask) > 0.5, name=name)
        bodies = found.instances
        if len(bodies) > self.max_vertebrae:
            raise DataError(
                name, f"{len(bodies)} vertebral bodies, more than max_vertebrae={self.max_vertebrae}; raise it"
            )
        side = self.window * float(np.median([b.bbox[2] - b.bbox[0] for b in bodies]))
        centres = []
        for b in bodies:
            # The centroid's projection onto the smooth curve through all bodies: a body that slipped off the line
            # of its neighbours sits off-centre in its patch, as it does on the film.
            nearest = found.curve[int(np.argmin(((found.curve - b.centroid) ** 2).sum(axis=1)))]
            centres.append(nearest + float((b.centroid - nearest) @ b.tangent) * b.tangent)
        return np.array([[x, y, side] for x, y in centres], dtype=np.float64)

    def check_file(self, path: str | os.PathLike) -> np.ndarray:
        """Read a vertebra mask file and return its windows: whether the film can be cut, before a run needs it.

        Raises:
            DataError: naming the file, for an unreadable mask or one :meth:`windows` refuses.
        """
        return self.windows(read_mask(path), name=str(path))

    def crop(self, img: torch.Tensor, windows: np.ndarray) -> torch.Tensor:
        """Cut the windows out of a ``(C, H, W)`` image: ``(C, max_vertebrae, P, P)``, zero past the last body."""
        img = torch.as_tensor(img, dtype=torch.float32)
        c, h, w = img.shape
        p = self.patch_size
        out = torch.zeros(c, self.max_vertebrae, p, p)
        for k, window in enumerate(windows):
            s, film_part, window_part = _overlap(window, h, w)
            piece = torch.zeros(c, s, s)
            piece[(slice(None), *window_part)] = img[(slice(None), *film_part)]
            mode = "area" if s >= p else "bilinear"
            out[:, k] = F.interpolate(piece[None], size=(p, p), mode=mode, **_corners(mode))[0]
        return out

    def paste(self, patches: torch.Tensor, windows: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
        """Map per-patch maps ``(K, P, P)`` back onto the film: ``(1, H, W)``, the maximum where windows overlap.

        Args:
            patches: one map per window (rows past ``len(windows)`` are ignored).
            windows: as from :meth:`windows`.
            shape: the film's ``(H, W)``.
        """
        h, w = int(shape[0]), int(shape[1])
        patches = torch.as_tensor(patches, dtype=torch.float32).reshape(-1, self.patch_size, self.patch_size)
        out = torch.zeros(1, h, w)
        for k, window in enumerate(windows):
            s, film_part, window_part = _overlap(window, h, w)
            piece = F.interpolate(patches[k][None, None], size=(s, s), mode="bilinear", align_corners=False)[0, 0]
            out[0][film_part] = torch.maximum(out[0][film_part], piece[window_part])
        return out

    def __call__(
        self, img: torch.Tensor, masks: torch.Tensor, name: str = "film"
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Cut the patches of one film.

        Args:
            img: ``(1, H, W)`` film.
            masks: ``(C, H, W)`` structure masks of the film; channel ``mask_channel`` is the vertebral bodies.
            name: the file named in errors.

        Returns:
            the film patches ``(K, P, P)``, the mask patches ``(C * K, P, P)`` (channel-major: every body of the
            first structure, then of the next) and the windows (see :meth:`windows`), ``K = max_vertebrae``.

        Raises:
            DataError: for a film and masks of different sizes, a missing mask channel, or a mask without bodies.
        """
        if tuple(img.shape[-2:]) != tuple(masks.shape[-2:]) or img.shape[0] != 1:
            raise DataError(name, f"film {tuple(img.shape)} and masks {tuple(masks.shape)} do not match")
        if not 0 <= self.mask_channel < masks.shape[0]:
            raise DataError(name, f"no vertebra mask channel {self.mask_channel} among {masks.shape[0]} masks")
        windows = self.windows(np.asarray(torch.as_tensor(masks[self.mask_channel]).detach().cpu()), name=name)
        film = self.crop(torch.as_tensor(img), windows)[0]
        mask_patches = self.crop(torch.as_tensor(masks), windows).flatten(0, 1)
        return film, mask_patches, windows


def _overlap(window: Sequence[float], h: int, w: int) -> tuple[int, tuple[slice, slice], tuple[slice, slice]]:
    """A window ``[centre_x, centre_y, side]`` on an ``(h, w)`` film: its side in whole pixels, and the (row,
    column) slices of the part inside the film, in film and in window coordinates (empty when none is inside)."""
    cx, cy, side = window
    s = max(int(round(side)), 1)
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    xa, ya = min(max(x0, 0), w), min(max(y0, 0), h)
    xb, yb = max(min(x0 + s, w), xa), max(min(y0 + s, h), ya)
    return s, (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def _corners(mode: str) -> dict:
    return {} if mode == "area" else {"align_corners": False}


class VertebraPatchesd(MapTransform, InvertibleTransform):
    """Dictionary-based wrapper of :py:class:`VertebraPatches`: each film key with its mask key.

    The film key gets the film patches and keeps its metadata; the windows are recorded in its transform trace,
    so ``Invertd`` (with this transform in the ``Compose``) maps per-patch maps, e.g. GradCAM, back onto the film.
    The mask key gets the mask patches.

    Args:
        keys: film keys, ``(1, H, W)`` each.
        mask_keys: the mask key of each film key, ``(C, H, W)`` each.
        patch_size, max_vertebrae, window, mask_channel: as for :py:class:`VertebraPatches`.
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        ValueError: when ``keys`` and ``mask_keys`` differ in length.
    """

    backend = VertebraPatches.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_keys: KeysCollection,
        patch_size: int = 32,
        max_vertebrae: int = 20,
        window: float = 2.2,
        mask_channel: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_keys = ensure_tuple(mask_keys)
        if len(self.mask_keys) != len(self.keys):
            raise ValueError(f"{len(self.keys)} film keys {self.keys} but {len(self.mask_keys)} mask keys")
        self.patcher = VertebraPatches(patch_size, max_vertebrae, window, mask_channel)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key, mask_key in self.key_iterator(d, self.mask_keys):
            film = d[key]
            meta = film.meta if isinstance(film, MetaTensor) else {}
            name = f"{meta.get('filename_or_obj', key)} (vertebra mask)"
            patches, mask_patches, windows = self.patcher(film, d[mask_key], name=name)
            # The film's metadata and trace go with its patches, so Invertd can find its way back.
            out = convert_to_dst_type(patches, film)[0]
            self.push_transform(out, orig_size=tuple(film.shape[-2:]), extra_info={"windows": windows.tolist()})
            d[key] = out
            d[mask_key] = mask_patches
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            transform = self.pop_transform(d[key])
            windows = np.asarray(transform["extra_info"]["windows"], dtype=np.float64).reshape(-1, 3)
            pasted = self.patcher.paste(torch.as_tensor(d[key]), windows, transform["orig_size"])
            d[key] = convert_to_dst_type(pasted, d[key])[0]
        return d
