"""The training cache: every record loaded, every bad one reported, no thread left running."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed

from monai.data import CacheDataset as _MonaiCacheDataset
from tqdm import tqdm

from spine_monai.errors import DataError, Problem, find_data_error

__all__ = ["CacheDataset"]


class CacheDataset(_MonaiCacheDataset):
    """MONAI's :class:`~monai.data.CacheDataset` whose cache pass reports every bad record at once.

    MONAI fills the cache with a ``multiprocessing.pool.ThreadPool`` and stops at the first record that fails to
    load. Leaving the pool terminates it without waiting for the loads still running in its other threads; when
    the process then exits with the error, a thread still inside native code (a NIfTI or JPEG decode) is torn down
    mid-call and the C++ runtime aborts the process (``terminate called without an active exception``, exit
    134), after the error was printed. Here every record is loaded, the pool is left only once every thread has
    finished, and the problems of all bad records are raised together as one :class:`DataError`, in the records'
    order.

    Args:
        args: passed to MONAI's ``CacheDataset``.
        kwargs: passed to MONAI's ``CacheDataset``.
    """

    def _fill_cache(self, indices=None) -> list:
        if self.cache_num <= 0:
            return []
        if indices is None:
            indices = list(range(self.cache_num))
        workers = self.num_workers or os.cpu_count() or 1
        items: dict[int, object] = {}
        problems: dict[int, list[Problem]] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self._load_cache_item, i): i for i in indices}
            done = as_completed(futures)
            if self.progress:
                done = tqdm(done, total=len(futures), desc="Loading dataset")
            try:
                for future in done:
                    index = futures[future]
                    try:
                        items[index] = future.result()
                    except Exception as e:
                        error = find_data_error(e)
                        if error is None:
                            raise
                        problems[index] = error.problems
            except BaseException:
                # Leaving the pool waits for the loads already running; the queued ones are not started.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if problems:
            raise DataError([p for i in sorted(problems) for p in problems[i]])
        return [items[i] for i in indices]
