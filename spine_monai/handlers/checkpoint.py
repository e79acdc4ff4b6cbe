"""Checkpoints: written atomically, read weights-only, found again, and checked against the input grid they were
trained on."""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch import nn
from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "AtomicCheckpointSaver",
    "INPUT_GRID_KEY",
    "attach_resume",
    "check_input_grid",
    "find_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "record_input_grid",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _AtomicDiskSaver(DiskSaver):
    """Ignite's atomic DiskSaver (temporary file, then rename), with a fixed filename option and the usual
    file permissions (the temporary file is created private, 0600)."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint=checkpoint, filename=filename, metadata=metadata)
        path = os.path.join(self.dirname, filename)
        if os.path.exists(path):
            os.chmod(path, 0o666 & ~_umask())

    def remove(self, filename: str) -> None:
        super().remove(filename=self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """:py:class:`monai.handlers.CheckpointSaver` whose files are written to a temporary file and renamed.

    A run killed while saving leaves the previous checkpoint intact instead of a truncated file. Takes
    the same arguments as MONAI's ``CheckpointSaver``.
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs) -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        fixed = {
            "_final_checkpoint": kwargs.get("final_filename"),
            "_key_metric_checkpoint": kwargs.get("key_metric_filename"),
            "_interval_checkpoint": None,
        }
        for attr, filename in fixed.items():
            ckpt = getattr(self, attr)
            if ckpt is not None:
                ckpt.save_handler = _AtomicDiskSaver(self.save_dir, filename)

    def interval_completed(self, engine: Engine) -> None:
        """Save the interval checkpoint, then remove interval checkpoints that an earlier process left behind.

        Ignite removes only the files this saver wrote itself beyond ``n_saved``; a resumed run would keep the
        killed run's ``checkpoint_epoch=N.pt`` beside its own, and ``--resume`` could later pick a stale one.

        Args:
            engine: the trainer.
        """
        super().interval_completed(engine)
        ckpt = self._interval_checkpoint
        kept = {item.filename for item in ckpt._saved}
        for path in Path(self.save_dir).glob("*.pt"):
            if path.name not in kept and _EPOCH.search(path.name) and path.name.startswith(ckpt.filename_prefix):
                path.unlink(missing_ok=True)

    def state_dict(self) -> dict:
        """The key-metric tracking list (which files hold the best scores), so a resumed run keeps it.

        Put this saver in the trainer's checkpoint (``save_dict``) and in the resume ``CheckpointLoader``: after
        a restart the best model is then replaced only by a better one, not by the first validation's.
        """
        if self._key_metric_checkpoint is None:
            return {}
        return dict(self._key_metric_checkpoint.state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            super().load_state_dict(state_dict)


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
    :func:`check_input_grid` refuses such a pairing before evaluation, inference or packaging. The record is kept
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


# How to run a segmentation checkpoint on the grid it was trained on; other bundles pass their own.
_GRID_HINT = (
    'use the setting it was trained with: --spatial_size "{trained}", or the variant file that sets it '
    "(configs/hires.json for 768x512)"
)


def check_input_grid(
    ckpt_path: str | os.PathLike,
    grid: Sequence[int] | None,
    hint: str = _GRID_HINT,
    identity: Mapping[str, object] | None = None,
) -> None:
    """Refuse a checkpoint whose network was trained on another input grid than ``grid``, or by another bundle.

    The identity (bundle, outputs, inputs) recorded by :func:`record_input_grid` must equal ``identity`` field by
    field: an AP model is refused by the LAT bundle, a model of one structure set by a config of another, an MRI
    model of T1w and T2w by a config of T1w alone. Checkpoints without a record (written by earlier versions, or
    made elsewhere) pass.

    Args:
        ckpt_path: a state dict, or a training checkpoint holding one under ``"model"``; read with
            :func:`load_checkpoint`.
        grid: the (H, W) the config gives the network; ``None`` skips the grid.
        hint: how to run the checkpoint on its grid, ending that error; ``{trained}`` is the grid it was trained
            on. The default names ``spatial_size`` and the segmentation bundles' ``configs/hires.json``.
        identity: the config's ``model_identity``; ``None`` skips it.

    Raises:
        ValueError: naming the file and every difference, with what to pass.
    """
    state = load_checkpoint(ckpt_path)
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
                f"{ckpt_path}: this model does not belong to this config; it was trained with "
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
            f"{ckpt_path}: the network was trained on a {'x'.join(map(str, trained))} input grid, but this config "
            f"gives it {'x'.join(map(str, configured))}; {hint.format(trained=trained)}"
        )


_EPOCH = re.compile(r"epoch=(\d+)\.pt$")


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The interval checkpoint (``*epoch=N.pt``) with the highest epoch in ``ckpt_dir``, or ``None``."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.glob("*.pt") if (m := _EPOCH.search(p.name))]
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


def attach_resume(
    trainer: Engine,
    enabled,
    ckpt_dir: str | os.PathLike,
    objects: dict,
    map_location=None,
    summary_writer: SummaryWriter | None = None,
) -> CheckpointLoader | None:
    """When ``enabled``, restore the latest interval checkpoint into ``objects`` as the trainer starts.

    A run killed mid-epoch restarts with the same command plus ``--resume true``: model, optimizer,
    scheduler, trainer (epoch and iteration) and the best-model tracking come back from the last
    ``checkpoint_epoch=N.pt``, and training goes on to the same ``max_epochs``. The interrupted epoch is redone.
    The file is read with ``torch.load(weights_only=True)`` by MONAI's ``CheckpointLoader``.

    Args:
        trainer: the trainer to attach to.
        enabled: the bundle's ``resume`` value (bool or text such as ``"true"``).
        ckpt_dir: where the interval checkpoints are.
        objects: name -> object with ``load_state_dict``, the same names the checkpoint was saved with.
        map_location: passed to ``torch.load``.
        summary_writer: the run's TensorBoard writer, when it is not yet writing (a ``LazySummaryWriter``). The
            redone epoch logs its iterations again; the writer then starts with a restart event at the first
            iteration the checkpoint does not hold, and TensorBoard discards the killed run's values from that
            step on (the epoch-level scalars, at the smaller epoch steps, are kept).

    Returns:
        the attached loader, or ``None`` when not resuming.

    Raises:
        FileNotFoundError: when resuming is asked for and there is no checkpoint to resume from.
    """
    from spine_monai.bundle import as_bool

    if not as_bool(enabled):
        return None
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise FileNotFoundError(f"--resume true, but {ckpt_dir} holds no checkpoint_epoch=N.pt to resume from")
    load_checkpoint(path)  # a file torch would refuse is named with the reason before the trainer starts
    logging.getLogger(__name__).info("resuming from %s", path)
    loader = CheckpointLoader(load_path=path, load_dict=objects, map_location=map_location)
    loader.attach(trainer)
    if summary_writer is not None:
        # Attached after the loader, so the trainer's iteration is the checkpoint's when this runs.
        trainer.add_event_handler(
            Events.STARTED, lambda engine: setattr(summary_writer, "purge_step", engine.state.iteration + 1)
        )
    return loader
