"""Checkpoints written atomically, and the helpers that find them again."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

__all__ = ["AtomicCheckpointSaver", "latest_checkpoint", "find_checkpoint"]


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
