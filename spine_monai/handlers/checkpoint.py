"""Handlers that write training checkpoints atomically and resume training from them."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader
from monai.handlers import CheckpointSaver
from torch.utils.tensorboard import SummaryWriter

from spine_monai.workflow.checkpoint import EPOCH_FILE, check_model_record, latest_checkpoint, load_checkpoint
from spine_monai.workflow.config import as_bool

__all__ = ["AtomicCheckpointSaver", "CheckpointLoader", "attach_resume"]


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
            if path.name not in kept and EPOCH_FILE.search(path.name) and path.name.startswith(ckpt.filename_prefix):
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


def attach_resume(
    trainer: Engine,
    enabled,
    ckpt_dir: str | os.PathLike,
    objects: dict,
    map_location=None,
    summary_writer: SummaryWriter | None = None,
) -> MonaiCheckpointLoader | None:
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
    if not as_bool(enabled):
        return None
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise FileNotFoundError(f"--resume true, but {ckpt_dir} holds no checkpoint_epoch=N.pt to resume from")
    load_checkpoint(path)  # a file torch would refuse is named with the reason before the trainer starts
    logging.getLogger(__name__).info("resuming from %s", path)
    loader = MonaiCheckpointLoader(load_path=path, load_dict=objects, map_location=map_location)
    loader.attach(trainer)
    if summary_writer is not None:
        # Attached after the loader, so the trainer's iteration is the checkpoint's when this runs.
        trainer.add_event_handler(
            Events.STARTED, lambda engine: setattr(summary_writer, "purge_step", engine.state.iteration + 1)
        )
    return loader


class CheckpointLoader(MonaiCheckpointLoader):
    """:py:class:`monai.handlers.CheckpointLoader` that reads the file once, weights only, and refuses a model that
    does not belong to this config before loading it.

    The grid and identity recorded by :func:`spine_monai.workflow.record_input_grid` are checked against the config's
    (:func:`spine_monai.workflow.check_model_record`) on the checkpoint this handler has just read, so a model trained
    on another input grid, or by another bundle, stops the run with the file named instead of giving other outputs.
    A file ``torch.load(weights_only=True)`` refuses is named with the reason
    (:func:`~spine_monai.workflow.load_checkpoint`).

    Args:
        load_path: the checkpoint.
        load_dict: name -> object to load, as MONAI's loader takes it.
        input_grid: the (H, W) the config gives the network; ``None`` for networks given whole images of any size.
        model_identity: the config's ``model_identity`` (bundle, outputs, inputs); ``None`` skips that check.
        grid_hint: the bundle's text for how to run a checkpoint on its own grid (``{trained}`` is that grid).
        kwargs: MONAI's ``CheckpointLoader`` arguments (``strict``, ``name``); ``map_location`` changes nothing: the
            file is read onto the CPU and each object copies its tensors onto its own device.
    """

    def __init__(
        self,
        load_path: str,
        load_dict: dict,
        input_grid: Sequence[int] | None = None,
        model_identity: Mapping[str, object] | None = None,
        grid_hint: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)
        if not self.strict_shape:
            raise ValueError(
                "spine_monai.handlers.CheckpointLoader loads whole checkpoints; strict_shape=False is not supported"
            )
        self.input_grid = input_grid
        self.model_identity = model_identity
        self.grid_hint = grid_hint

    def __call__(self, engine: Engine) -> None:
        checkpoint = load_checkpoint(self.load_path)
        check_model_record(checkpoint, self.load_path, self.input_grid, self.grid_hint, self.model_identity)
        name = next(iter(self.load_dict))
        if len(self.load_dict) == 1 and name not in checkpoint:
            checkpoint = {name: checkpoint}
        # The tensors are on the CPU; load_state_dict copies them onto each object's own device.
        Checkpoint.load_objects(to_load=self.load_dict, checkpoint=checkpoint, strict=self.strict)
        self.logger.info(f"Restored all variables from {self.load_path}")
