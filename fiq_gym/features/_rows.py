"""Read batches of catalog rows without mapping the whole file into the process.

Reading a memory-mapped array touches its pages, and every touched page stays in the
process's resident set until the map is dropped: one pass over a million 64x64 images
would make the process look 12 GB large. Reading the same bytes with ``pread`` leaves them
in the page cache only, so memory stays at one batch, however large the catalog.
"""

from __future__ import annotations

import os

import numpy as np

from fiq_gym.catalog.lazy_images import LazyImages

__all__ = ["RowReader"]


class RowReader:
    """Rows of a catalog array, by slice or by index, copied out one batch at a time.

    Reads the ``.npy`` file directly when the array is a memory map of a whole file, and
    falls back to plain indexing for in-memory arrays and views.
    """

    def __init__(self, array: np.ndarray | LazyImages) -> None:
        self.array = array
        self._fd: int | None = None
        self._row_bytes = int(array.dtype.itemsize * np.prod(array.shape[1:], dtype=np.int64))
        filename = getattr(array, "filename", None)
        if isinstance(array, np.memmap) and filename and array.flags.c_contiguous:
            offset = int(array.offset)
            # Only a map of the whole data block: a slice's ``offset`` is its parent's.
            if os.path.getsize(filename) == offset + array.nbytes:
                self._fd = os.open(filename, os.O_RDONLY)
                self._offset = offset
                self._filename: str = filename

    def __len__(self) -> int:
        return len(self.array)

    def _read(self, start: int, stop: int) -> np.ndarray:
        assert self._fd is not None
        size = (stop - start) * self._row_bytes
        data = bytearray(size)
        view, done = memoryview(data), 0
        while done < size:  # pread may return less than asked for
            got = os.preadv(self._fd, [view[done:]], self._offset + start * self._row_bytes + done)
            if got == 0:
                raise OSError(f"{self._filename} ended early: is the catalog file truncated?")
            done += got
        return np.frombuffer(data, dtype=self.array.dtype).reshape(stop - start, *self.array.shape[1:])

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new, writable array."""
        stop = min(stop, len(self.array))
        if self._fd is None:
            return np.array(self.array[start:stop])
        return self._read(start, stop)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows at indices ``rows``, in that order, one read per run of consecutive rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._fd is None:
            return np.array(self.array[rows])
        if len(rows) == 0:
            return np.empty((0, *self.array.shape[1:]), dtype=self.array.dtype)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [len(rows)]])
        parts = [self._read(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
