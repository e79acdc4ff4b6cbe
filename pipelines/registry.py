"""The experiment pipelines by name, for ``spine-monai experiment <name> [args]``.

Each entry is the experiment module's ``main(argv)``, which parses ``argv`` (``None``: ``sys.argv[1:]``) and
returns the exit status.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines import architectures, kfold, noise, train_size

__all__ = ["EXPERIMENTS"]

EXPERIMENTS: dict[str, Callable[[list[str] | None], int]] = {
    "kfold": kfold.main,
    "noise": noise.main,
    "train_size": train_size.main,
    "architectures": architectures.main,
}
