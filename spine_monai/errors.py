"""The one exception type for data problems, and the record of a single problem."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike

__all__ = ["DataError", "Problem", "ProblemCollector", "end_with_data_errors", "find_data_error"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input.

    Args:
        path: the file or folder the problem is about.
        reason: what is wrong, in words a user can act on.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class DataError(ValueError):
    """Bad input data: carries every problem found, each with its path and reason.

    Args:
        path_or_problems: the path of a single bad file, or the problems collected by a batch command.
        reason: the reason, when ``path_or_problems`` is a single path.

    Example::

        raise DataError("/data/ID (3)/AP/AP.jpg", "truncated or corrupt JPEG")
    """

    def __init__(self, path_or_problems: str | PathLike | Iterable[Problem], reason: str | None = None) -> None:
        if reason is not None:
            self.problems = [Problem(str(path_or_problems), reason)]
        else:
            if isinstance(path_or_problems, (str, PathLike)):
                raise TypeError("DataError(path) needs a reason: DataError(path, reason).")
            self.problems = list(path_or_problems)
            if not self.problems:
                raise ValueError("DataError needs at least one problem.")
        super().__init__(self._message())

    def _message(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} data problems:"] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    @property
    def path(self) -> str:
        """The path of the first problem."""
        return self.problems[0].path

    @property
    def reason(self) -> str:
        """The reason of the first problem."""
        return self.problems[0].reason


class ProblemCollector:
    """Collects problems across a batch so that they are reported together, never one at a time.

    Example::

        problems = ProblemCollector()
        for f in files:
            with problems.catch():
                check(f)
        problems.raise_if_any()
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str | PathLike, reason: str) -> None:
        self.problems.append(Problem(str(path), reason))

    def extend(self, problems: Iterable[Problem]) -> None:
        self.problems.extend(problems)

    def catch(self) -> _Catch:
        """A context manager that records a raised :class:`DataError` instead of propagating it."""
        return _Catch(self)

    def __len__(self) -> int:
        return len(self.problems)

    def __bool__(self) -> bool:
        return bool(self.problems)

    def raise_if_any(self) -> None:
        if self.problems:
            raise DataError(self.problems)


class _Catch:
    def __init__(self, collector: ProblemCollector) -> None:
        self.collector = collector
        self.failed = False

    def __enter__(self) -> _Catch:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and isinstance(exc, DataError):
            self.collector.extend(exc.problems)
            self.failed = True
            return True
        return False


def find_data_error(exc: BaseException | None) -> DataError | None:
    """The first :class:`DataError` in an exception's cause chain.

    MONAI wraps an error raised in a transform or while building a config component in ``RuntimeError`` s; the
    :class:`DataError` that names the bad file is further down the chain.

    Args:
        exc: the exception caught, or ``None``.

    Returns:
        the :class:`DataError`, or ``None`` when the chain holds none.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def end_with_data_errors() -> bool:
    """Make a process that dies of bad data end with the :class:`DataError`, not with MONAI's wrappers.

    ``monai.bundle run`` prints the whole chain of an uncaught error, whose last lines are then MONAI's
    ``Failed to instantiate component`` or ``applying transform`` and not the files and reasons a user must act on.
    This adds, after the usual traceback, the :class:`DataError` of the chain, with every problem it carries. The
    exit status stays 1. Call it from a config's ``initialize`` list; calling it again changes nothing.

    Returns:
        True, so it can sit in an expression list.
    """
    previous = sys.excepthook
    if getattr(previous, "_spine_monai", False):
        return True

    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        error = find_data_error(exc)
        if error is not None and error is not exc:
            print(f"\n{DataError.__module__}.{DataError.__name__}: {error}", file=sys.stderr, flush=True)

    hook._spine_monai = True
    sys.excepthook = hook
    return True
