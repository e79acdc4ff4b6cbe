"""Checkpoint files: read weights-only with errors that name the file, found again, and checked against the input grid
and the bundle they were trained for.

Nothing here is an Ignite handler; the handlers that save and resume (:mod:`spine_monai.handlers.checkpoint`) and the
networks that load pretrained weights both read checkpoints through this module.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "EPOCH_FILE",
    "INPUT_GRID_KEY",
    "MODEL_IDENTITY_KEY",
    "check_model_record",
    "find_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "record_input_grid",
]

# Where a state dict records its network's input grid: PyTorch's per-module metadata (``state_dict._metadata``),
# which keeps the file a plain state dict that ``load_state_dict`` and MONAI's ``ckpt_export`` read as before.
INPUT_GRID_KEY = "spine_monai_input_grid"


# Where a state dict records what its network is: the bundle, its outputs (structures or classes) and its inputs.
MODEL_IDENTITY_KEY = "spine_monai_model"


def record_input_grid(
    network: nn.Module, grid: Sequence[int] | None, identity: Mapping[str, object] | None = None
) -> nn.Module:
    """Make every state dict of ``network`` record ``grid``, the (H, W) of the images it is given, and its identity.

    A fully convolutional or globally pooling network runs on any grid, so images brought to another grid than the
    one it was trained on give worse outputs without an error. A checkpoint of one bundle loaded by another with as
    many output channels runs too, and writes the other bundle's structures from it. With both in its checkpoints,
    :func:`check_model_record` refuses such a pairing before evaluation, inference or packaging. The record is kept
    in the state dict's per-module metadata, under the network's own prefix (``module`` when DDP wraps it).

    Args:
        network: the network being trained.
        grid: its input grid, (H, W): ``spatial_size`` of a film resized to fit, or a patch's size; ``None`` for a
            network that is given whole images of any size (the MRI slices).
        identity: the bundle's ``model_identity``: ``bundle`` (its name), ``outputs`` (structures or class names,
            in channel order) and ``inputs`` (views or MRI channels, in channel order).

    Returns:
        ``network``, whose state dicts now carry the record.
    """
    grid = None if grid is None else [int(s) for s in grid]
    identity = None if identity is None else _plain(identity)

    def _record(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        if grid is not None:
            local_metadata[INPUT_GRID_KEY] = grid
        if identity is not None:
            local_metadata[MODEL_IDENTITY_KEY] = identity

    network.register_state_dict_post_hook(_record)
    return network


def _plain(identity: Mapping[str, object]) -> dict:
    # Lists and strings only, so that the record survives torch.load(weights_only=True) and compares as data.
    return {str(k): (str(v) if isinstance(v, str) else [str(x) for x in v]) for k, v in identity.items()}


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with an error that names the file.

    Args:
        path: the checkpoint.

    Returns:
        what the file holds: tensors, and containers of tensors and plain values.

    Raises:
        ValueError: for a file ``torch.load(weights_only=True)`` refuses, such as a pickle that would run code, or
            a truncated file, naming it and the reason (torch's own message, which suggests loading it with
            ``weights_only=False``, is not passed on).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it holds Python objects besides tensors, which loading would have to execute"
    except (RuntimeError, EOFError) as e:
        reason = f"it is not a complete PyTorch checkpoint ({type(e).__name__})"
    # torch's own message suggests weights_only=False, which would run whatever the file holds: not for this file.
    raise ValueError(
        f"{path}: refused: {reason}; spine-monai loads checkpoints as weights only, so that a file from elsewhere "
        "cannot run code. Use a checkpoint written by a spine-monai bundle."
    ) from None


# Ends a grid error when the bundle gives no hint of its own.
_GRID_HINT = "run it with the configuration it was trained with"


def check_model_record(
    state: Any,
    source: str | os.PathLike,
    grid: Sequence[int] | None,
    hint: str | None = None,
    identity: Mapping[str, object] | None = None,
) -> None:
    """Refuse a loaded checkpoint whose network was trained on another input grid than ``grid``, or by another bundle.

    The identity (bundle, outputs, inputs) recorded by :func:`record_input_grid` must equal ``identity`` field by
    field: an AP model is refused by the LAT bundle, a model of one structure set by a config of another, an MRI
    model of T1w and T2w by a config of T1w alone. Checkpoints without a record (written by earlier versions, or
    made elsewhere) pass.

    Args:
        state: what :func:`load_checkpoint` read: a state dict, or a training checkpoint holding one under ``"model"``.
        source: the file it was read from, named in the error.
        grid: the (H, W) the config gives the network; ``None`` skips the grid.
        hint: how to run the checkpoint on its grid, ending that error; ``{trained}`` is the grid it was trained on.
            A bundle states its own (which keys or variant files set the grid); ``None`` gives a generic one.
        identity: the config's ``model_identity``; ``None`` skips it.

    Raises:
        ValueError: naming the file and every difference, with what to pass.
    """
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    metadata = list(getattr(state, "_metadata", {}).values())
    recorded = next((m[MODEL_IDENTITY_KEY] for m in metadata if MODEL_IDENTITY_KEY in m), None)
    if recorded is not None and identity is not None:
        expected = _plain(identity)
        differences = [
            f"{field} {recorded[field]} (this config: {expected[field]})"
            for field in ("bundle", "outputs", "inputs")
            if field in recorded and field in expected and recorded[field] != expected[field]
        ]
        if differences:
            raise ValueError(
                f"{source}: this model does not belong to this config; it was trained with "
                + "; ".join(differences)
                + ". Use a checkpoint of this bundle, or run this one with the bundle and the structures, label map "
                "or channels it was trained with."
            )
    records = [m[INPUT_GRID_KEY] for m in metadata if INPUT_GRID_KEY in m]
    if not records or grid is None:
        return
    trained, configured = [int(s) for s in records[0]], [int(s) for s in grid]
    if trained != configured:
        raise ValueError(
            f"{source}: the network was trained on a {'x'.join(map(str, trained))} input grid, but this config "
            f"gives it {'x'.join(map(str, configured))}; {(hint or _GRID_HINT).format(trained=trained)}"
        )


# An interval checkpoint's file name: ``checkpoint_epoch=N.pt``.
EPOCH_FILE = re.compile(r"epoch=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The interval checkpoint (``*epoch=N.pt``) with the highest epoch in ``ckpt_dir``, or ``None``."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.glob("*.pt") if (m := EPOCH_FILE.search(p.name))]
    return str(max(found)[1]) if found else None


def find_checkpoint(*candidates: str | os.PathLike) -> str:
    """The first existing file among ``candidates``.

    Raises:
        FileNotFoundError: naming every place that was looked at.
    """
    for c in candidates:
        if c and Path(c).is_file():
            return str(c)
    tried = ", ".join(str(c) for c in candidates if c)
    raise FileNotFoundError(
        f"no model checkpoint found (looked for {tried}); train first, or pass --ckpt_path /path/to/model.pt"
    )
