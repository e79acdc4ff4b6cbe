"""The inputs of an inference or evaluation run, and the report of the ones that could not be read."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spine_monai.errors import DataError, Problem, find_data_error

__all__ = ["InferenceInputs", "screen_records"]

logger = logging.getLogger(__name__)


@dataclass
class InferenceInputs:
    """The records a run will process, and the problems of the ones it could not read."""

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


def screen_records(records: Sequence[dict], loaders: Sequence[Callable]) -> InferenceInputs:
    """Load every record once with a bundle's own loading transforms, and set aside the ones that fail.

    An evaluation goes through every good case and reports the bad ones together at the end
    (:meth:`InferenceInputs.finish`) rather than stopping at the first; the loaders are the first transforms of
    the bundle's preprocessing, so a record is judged by exactly the checks that would stop it later.

    Args:
        records: the run's records.
        loaders: the transforms that read a record's files (and check them), applied in order.

    Returns:
        the good records, and the problems of the others.

    Raises:
        DataError: when no record is good, listing every problem.
    """
    good, problems = [], []
    for record in records:
        data = dict(record)
        try:
            for load in loaders:
                data = load(data)
        except Exception as e:
            error = find_data_error(e)
            if error is None:
                raise
            problems.extend(error.problems)
        else:
            good.append(record)
    if problems and not good:
        raise DataError(problems)
    return InferenceInputs(good, problems)
