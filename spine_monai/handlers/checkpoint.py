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


def record_input_grid(network: nn.Module, grid: Sequence[int]) -> nn.Module:
    """Make every state dict of ``network`` record ``grid``, the (H, W) of the images it is given.

    A fully convolutional or globally pooling network runs on any grid, so images brought to another grid than the
    one it was trained on give worse outputs without an error. With the grid in its checkpoints,
    :func:`check_input_grid` refuses such a pairing before evaluation, inference or packaging. The record is kept in
    the state dict's per-module metadata, under the network's own prefix (``module`` when DDP wraps it).

    Args:
        network: the network being trained.
        grid: its input grid, (H, W): ``spatial_size`` of a film resized to fit, or a patch's size.

    Returns:
        ``network``, whose state dicts now carry the grid.
    """
    grid = [int(s) for s in grid]

    def _record(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        local_metadata[INPUT_GRID_KEY] = grid

    network.register_state_dict_post_hook(_record)
    return network


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with an error that names the file.

    Args:
        path: the checkpoint.

    Returns:
        what the file holds: tensors, and containers of tensors and plain values.

    Raises:
        ValueError: for a file ``torch.load(weights_only=True)`` refuses, such as a pickle that would run code, or
            a truncated file; the loader's own error is chained.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a weights-only checkpoint, refused by torch.load(weights_only=True): {e}") from e


# How to run a segmentation checkpoint on the grid it was trained on; other bundles pass their own.
_GRID_HINT = (
    'use the setting it was trained with: --spatial_size "{trained}", or the variant file that sets it '
    "(configs/hires.json for 768x512)"
)


def check_input_grid(ckpt_path: str | os.PathLike, grid: Sequence[int], hint: str = _GRID_HINT) -> None:
    """Refuse a checkpoint whose network was trained on another input grid than ``grid``.

    Checkpoints without the record of :func:`record_input_grid` (written before spine-monai 0.1.12, or made
    elsewhere) pass.

    Args:
        ckpt_path: a state dict, or a training checkpoint holding one under ``"model"``; read with
            :func:`load_checkpoint`.
        grid: the (H, W) the config gives the network.
        hint: how to run the checkpoint, ending the error; ``{trained}`` is the grid it was trained on. The
            default names ``spatial_size`` and the segmentation bundles' ``configs/hires.json``.

    Raises:
        ValueError: naming the file, both grids and the hint.
    """
    state = load_checkpoint(ckpt_path)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    records = [m[INPUT_GRID_KEY] for m in getattr(state, "_metadata", {}).values() if INPUT_GRID_KEY in m]
    if not records:
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
    logging.getLogger(__name__).info("resuming from %s", path)
    loader = CheckpointLoader(load_path=path, load_dict=objects, map_location=map_location)
    loader.attach(trainer)
    if summary_writer is not None:
        # Attached after the loader, so the trainer's iteration is the checkpoint's when this runs.
        trainer.add_event_handler(
            Events.STARTED, lambda engine: setattr(summary_writer, "purge_step", engine.state.iteration + 1)
        )
    return loader
