"""The inputs of an inference run, and the report of the ones that could not be read."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from spine_monai.errors import DataError, Problem

__all__ = ["InferenceInputs"]

logger = logging.getLogger(__name__)


@dataclass
class InferenceInputs:
    """The images an inference run will process, and the ones it could not read."""

    records: list[dict]
    problems: list[Problem]

    def finish(self, output_dir: str | os.PathLike, strict: bool = True) -> None:
        """Write ``failures.csv`` (always, possibly empty) and, if ``strict``, fail after everything else ran.

        Raises:
            DataError: listing every input that was skipped, when ``strict`` and there were any.
        """
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "failures.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "reason"])
            writer.writeheader()
            writer.writerows(p.to_dict() for p in self.problems)
        if self.problems:
            logger.error(
                "%d of %d inputs were skipped (see %s):\n%s",
                len(self.problems),
                len(self.problems) + len(self.records),
                out / "failures.csv",
                "\n".join(f"  - {p}" for p in self.problems),
            )
            if strict:
                raise DataError(self.problems)
