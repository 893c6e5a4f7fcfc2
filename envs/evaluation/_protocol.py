"""What crosses between the sealed evaluation harness and its child process, and how.

Both sides import this module: :mod:`fiq_gym.envs.evaluation.harness` (the caller, where the
agent runs) and :mod:`fiq_gym.envs.evaluation._env_worker` (the child, which owns the
environment). The isolated harness (:mod:`fiq_gym.envs.evaluation.isolation` and the agent's
process, :mod:`fiq_gym.envs.evaluation._agent_worker`) sends its messages in the same frames
and its observations and actions through the same region.

**Messages** travel on the child's stdin and stdout as (tag, length, payload) frames. The
caller sends requests (``B`` build an env, ``I`` start an evaluation) and actions (``S``);
the child answers with ``O`` (a value) or ``E`` (an exception). Actions are numbers only,
never a pickle: the child never unpickles anything that an agent produced.

**Bulk arrays** go through a shared memory region instead of the pipe when the platform has
one (Linux: an anonymous ``memfd`` that the caller creates and passes to the child at start,
so nothing is named in the file system and the kernel frees it with the last process). Per
step, the child copies the observations into the region and sends only the filtered info and
the done flag; the caller copies the observations out before it lets the child step again.
Large actions (``scores`` mode: a float per item and dialog) go the other way, and the child
copies them out before it reads them, so an agent that keeps writing into the region cannot
change an action after it was sent. This replaces a pickle, two pipe copies and an unpickle
of every step's observations (about 0.3 MB per step at 64 dialogs, 1.1 MB in ``shortlist``
mode, 2.6 MB of actions in ``scores`` mode) by two memory copies.

What the region holds is what the pipe used to carry: observations (which the agent gets
anyway) and actions (which the agent wrote). Ranks and the target never enter it; they
leave the child only in the result, after the last dialog, as before.

Not done: pipelining half batches (the child stepping one half while the agent acts on the
other). An agent is called once per turn with the whole batch, as in the in-process harness;
two calls of half the rows would change what a batched agent sees (its state is per row of
one batch, its random draws come in batch order), so results could differ from the
unsealed harness's.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import pickle
import select
import struct
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

__all__ = [
    "Layout",
    "SharedRegion",
    "decode_actions",
    "decode_answer",
    "encode_actions",
    "encode_answer",
    "read_message",
    "read_message_within",
    "write_message",
]

_HEADER = struct.Struct("<cQ")  # message tag, payload length
_ACTIONS = struct.Struct("<8sBB")  # dtype (numpy's string, e.g. b"<i8"), ndim, in the region
_MAX_NDIM = 8
_ALIGN = 64
#: Actions smaller than this travel in the message itself: for a few hundred bytes a pipe
#: write is cheaper than touching the region.
INLINE_ACTION_BYTES = 1 << 16
_NUMERIC_KINDS = "biuf"


def write_message(stream: IO[bytes], tag: bytes, payload: bytes = b"") -> None:
    # One write: a header written on its own wakes the reader, which then waits for the rest.
    stream.write(_HEADER.pack(tag, len(payload)) + payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next (tag, payload), or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    tag, size = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return tag, payload


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    """``size`` bytes from the raw descriptor ``fd``, None at its end; ``TimeoutError`` if
    they have not all come by ``deadline`` (``time.monotonic()``; None: wait for ever)."""
    parts, got = [], 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            ready = left > 0 and select.select([fd], [], [], left)[0]
            if not ready:
                raise TimeoutError
        part = os.read(fd, min(size - got, 1 << 20))
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def read_message_within(fd: int, timeout: float | None) -> tuple[bytes, bytes] | None:
    """The next (tag, payload) from the raw descriptor ``fd`` (never through a buffered
    reader, so nothing waits unseen in a buffer), or None at the end of the stream. Raises
    ``TimeoutError`` when the whole message has not come within ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    header = _read_exact(fd, _HEADER.size, deadline)
    if header is None:
        return None
    tag, size = _HEADER.unpack(header)
    payload = _read_exact(fd, size, deadline)
    return None if payload is None else (tag, payload)


@dataclass(frozen=True)
class Layout:
    """Where each observation array and the actions sit in the shared region, for one env.

    ``fields`` holds (observation key, numpy dtype string, batched shape, byte offset). The
    actions area has room for the env's action shape at 8 bytes per number, so an agent may
    answer in any numeric dtype up to 64 bits.
    """

    fields: tuple[tuple[str, str, tuple[int, ...], int], ...]
    actions_offset: int
    actions_bytes: int

    @property
    def size(self) -> int:
        return self.actions_offset + self.actions_bytes

    @classmethod
    def for_spaces(cls, observation_space: Any, action_space: Any) -> Layout | None:
        """The layout of a vector env's (batched) spaces, or None if an observation is not a
        dict of fixed-shape arrays (then everything goes through the pipe)."""
        spaces = getattr(observation_space, "spaces", None)
        if not isinstance(spaces, dict) or not spaces:
            return None
        fields, offset = [], 0
        for key, space in spaces.items():
            shape, dtype = getattr(space, "shape", None), getattr(space, "dtype", None)
            if shape is None or dtype is None or np.dtype(dtype).kind not in _NUMERIC_KINDS:
                return None
            dtype = np.dtype(dtype)
            fields.append((str(key), dtype.str, tuple(int(n) for n in shape), offset))
            offset = _aligned(offset + math.prod(shape) * dtype.itemsize)
        action_shape = getattr(action_space, "shape", None) or ()
        return cls(tuple(fields), offset, _aligned(max(1, math.prod(action_shape)) * 8))


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class SharedRegion:
    """A memory region that the caller and the child both map (Linux ``memfd``).

    The caller :meth:`create` s it and passes its descriptor to the child; the child grows it
    to the layout of the env it builds (the region is sealed against shrinking, so no side
    can pull pages from under the other's mapping) and the caller maps what the child
    announced. Observation views and the actions area follow the current :class:`Layout`.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: mmap.mmap | None = None
        self._layout: Layout | None = None
        self._views: dict[str, np.ndarray] = {}

    @classmethod
    def create(cls) -> SharedRegion | None:
        """A new empty region, or None where there is no ``memfd`` (then the pipe carries all)."""
        if not hasattr(os, "memfd_create"):
            return None
        try:
            fd = os.memfd_create("fiq-gym-sealed-evaluation", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            return None
        if sys.platform.startswith("linux"):
            import fcntl

            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        return cls(fd)

    @property
    def layout(self) -> Layout | None:
        return self._layout

    def use(self, layout: Layout | None, *, grow: bool = False) -> None:
        """Follow ``layout`` (None: nothing goes through the region). The child passes
        ``grow=True`` to make the region large enough first."""
        self._views = {}
        self._layout = layout
        if layout is None:
            return
        if grow and os.fstat(self.fd).st_size < layout.size:
            os.ftruncate(self.fd, layout.size)
        if self._map is None or len(self._map) < layout.size:
            if self._map is not None:
                self._map.close()
            self._map = mmap.mmap(self.fd, os.fstat(self.fd).st_size)
        self._views = {
            key: np.ndarray(shape, dtype=np.dtype(dtype), buffer=self._map, offset=offset)
            for key, dtype, shape, offset in layout.fields
        }

    def put_observations(self, obs: dict[str, np.ndarray]) -> bool:
        """Copy ``obs`` into the region; False (nothing written) if they do not fit the layout."""
        views = self._views
        if not views or obs.keys() != views.keys():
            return False
        if any(np.shape(obs[k]) != v.shape or np.asarray(obs[k]).dtype != v.dtype for k, v in views.items()):
            return False
        for key, view in views.items():
            np.copyto(view, obs[key], casting="no")
        return True

    def take_observations(self) -> dict[str, np.ndarray]:
        """A copy of the observations in the region: the agent may keep it, and the child
        may overwrite the region once the caller answers."""
        if not self._views:
            raise RuntimeError("the sealed evaluation process announced no observation layout; this is a bug")
        return {key: view.copy() for key, view in self._views.items()}

    def actions_area(self, nbytes: int) -> memoryview | None:
        """The first ``nbytes`` of the actions area, or None if they do not fit."""
        layout = self._layout
        if self._map is None or layout is None or nbytes > layout.actions_bytes:
            return None
        return memoryview(self._map)[layout.actions_offset : layout.actions_offset + nbytes]

    def close(self) -> None:
        self._views = {}
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def encode_actions(actions: Any, region: SharedRegion | None = None) -> bytes:
    """An agent's actions as a message: dtype, shape and the raw numbers, the numbers in the
    region when they are large and fit. Numbers only, never a pickle."""
    arr = np.ascontiguousarray(actions)
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"the agent's actions must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim > _MAX_NDIM:
        raise ValueError(
            f"the agent's actions must have at most {_MAX_NDIM} dimensions, got shape {arr.shape}"
        )
    head = struct.pack(f"<{arr.ndim}Q", *arr.shape)
    area = (
        region.actions_area(arr.nbytes) if region is not None and arr.nbytes >= INLINE_ACTION_BYTES else None
    )
    if area is not None:
        area[:] = arr.reshape(-1).view(np.uint8).data
        return _ACTIONS.pack(arr.dtype.str.encode(), arr.ndim, 1) + head
    return _ACTIONS.pack(arr.dtype.str.encode(), arr.ndim, 0) + head + arr.tobytes()


def decode_actions(payload: bytes, region: SharedRegion | None = None) -> np.ndarray:
    """The actions of :func:`encode_actions`, copied (out of the region too: what the env
    steps with cannot change afterwards)."""
    try:
        dtype_text, ndim, in_region = _ACTIONS.unpack_from(payload)
        if ndim > _MAX_NDIM:
            raise ValueError(f"{ndim} dimensions")
        dtype = np.dtype(dtype_text.rstrip(b"\0").decode("ascii"))
        shape = struct.unpack_from(f"<{ndim}Q", payload, _ACTIONS.size)
    except (struct.error, UnicodeDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"malformed actions message: {e}") from None
    if dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"malformed actions message: dtype {dtype}")
    nbytes = math.prod(shape) * dtype.itemsize
    start = _ACTIONS.size + 8 * ndim
    if in_region:
        source = None if region is None else region.actions_area(nbytes)
        if source is None:
            raise ValueError("malformed actions message: the actions do not fit the shared region")
    else:
        source = memoryview(payload)[start:]
    if len(source) != nbytes:
        raise ValueError(f"malformed actions message: {len(source)} bytes for shape {shape} of {dtype}")
    return np.frombuffer(source, dtype=dtype).reshape(shape).copy()


def encode_answer(
    obs: dict[str, np.ndarray], info: dict[str, Any], done: bool, region: SharedRegion | None, *, shared: bool
) -> bytes:
    """The child's answer to a reset or step: observations in the region if ``shared`` and
    they fit, otherwise in the message; the filtered info and the done flag in the message.

    The child passes ``shared=False`` when it will write the region again before the caller
    answers (a batch's last step, whose observations are followed at once by the next batch's
    first ones)."""
    inline = None if shared and region is not None and region.put_observations(obs) else obs
    return pickle.dumps((inline, dict(info), bool(done)), protocol=pickle.HIGHEST_PROTOCOL)


def decode_answer(
    payload: bytes, region: SharedRegion | None
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """(observations, info, done) of :func:`encode_answer`, the observations copied out of
    the region."""
    inline, info, done = pickle.loads(payload)
    if inline is None:
        if region is None:
            raise RuntimeError(
                "the sealed evaluation process wrote to a shared region this side does not have"
            )
        inline = region.take_observations()
    return inline, info, done
