"""Experiment tracking through MONAI's runner: ``python -m monai.bundle run ... --tracking mlflow``.

MONAI's tracking settings add an ``MLFlowHandler`` to the trainer that reads the loss with
``monai.handlers.from_engine(['loss'], first=True)``, which expects the engine's output decollated into one dict per
sample. The segmentation trainers keep their batches collated (``decollate: false``: decollating cost a fifth of the
training step, ``docs/performance.md``), so :func:`tracked_handlers` shows such handlers the collated batch as a
one-item list, and adds the best model to what the MLflow run keeps as artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from monai.handlers import MLFlowHandler

__all__ = ["tracked_handlers"]


def _reads_samples(transform: Callable) -> bool:
    # MONAI's from_engine returns a closure named after it; the bundles' own transforms read the batch dict directly.
    return getattr(transform, "__qualname__", "").startswith("from_engine.")


def _batch_as_list(transform: Callable) -> Callable:
    def read(output):
        return transform([output] if isinstance(output, dict) else output)

    return read


def tracked_handlers(handlers: Iterable, best_model: str | os.PathLike | None = None) -> list:
    """A trainer's handlers, with the experiment-tracking handlers MONAI's ``--tracking`` added fitted to this trainer.

    Args:
        handlers: the trainer's handlers (``train#handlers``), the tracking ones among them when asked for.
        best_model: the file the best model is saved to; an MLflow run gets it as an artifact when training ends.

    Returns:
        the same handlers; without ``--tracking`` nothing is changed.
    """
    handlers = list(handlers)
    for h in handlers:
        if isinstance(h, MLFlowHandler):
            if _reads_samples(h.output_transform):
                h.output_transform = _batch_as_list(h.output_transform)
            if best_model is not None:
                h.artifacts = [*(a for a in h.artifacts if a), str(best_model)]
    return handlers
