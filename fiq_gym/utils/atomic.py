"""Atomic file and directory writes: write beside the destination, then rename over it.

A reader never sees a half-written file or directory. Directories get two more guarantees:

* **Replacing is crash-safe.** The new directory takes the old one's place in a single
  ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system offer it (Linux on ext4,
  xfs, btrfs, tmpfs, ...). Elsewhere the old directory is moved aside first and moved back
  by the next writer or opener of the same path (:func:`recover_directory`) if the process
  died before the new one was in place; a path never ends up missing.
* **Leftovers of dead writers are cleaned.** Each writer holds an ``flock`` on a lock file
  beside its temporary directory for as long as it works. The kernel drops that lock when the
  process dies, even by ``kill -9``, so the next write of the same target can tell a dead
  writer's ``.NAME.tmp-*`` directory from a live one's and remove only the former.

A file's temporary (``.NAME.tmp-*.part`` beside it) is ``flock``-ed by its writer in the same
way, and the next write of the same file removes those whose writer died.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "exclusive",
    "reclaim_staging",
    "recover_directory",
    "staging_file",
]

log = logging.getLogger("fiq_gym")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _naming(e: OSError, path: Path) -> OSError:
    """The same error, naming the path the caller asked for instead of our temporary or lock
    file beside it (a user knows ``--out X``, not ``.X.tmp-1a2b``)."""
    return type(e)(e.errno, e.strerror, str(path))


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        # mkdir(parents=True) says "exists" when a component of the path is a regular file.
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None


def _lock_or_skip(fd: int, *, blocking: bool) -> bool:
    """flock ``fd``; False if another holder has it (only when not ``blocking``). A file
    system without locks counts as locked: writers go on unlocked, cleaners keep off."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            raise
        return blocking
    return True


# The suffix of file temporaries held with an flock (an older fiq-gym's have none, and no lock).
_LOCKED_PART = ".part"


def _file_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``, open and ``flock``-ed for as long as its writer
    lives, so that :func:`_reclaim_file_temporaries` can tell a killed writer's from a live one's."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=_LOCKED_PART, dir=path.parent)
        try:
            _lock_or_skip(fd, blocking=True)
        except BaseException:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise
        # A cleaner may have taken and deleted the fresh file before we locked it.
        if _same_file(fd, Path(tmp)):
            return fd, tmp
        os.close(fd)


def _reclaim_file_temporaries(path: Path) -> None:
    """Delete the temporary files that writers of ``path`` killed mid-write left beside it
    (``.NAME.tmp-*.part`` files whose lock is free; an older fiq-gym's once a day old)."""
    prefix = f".{path.name}.tmp-"
    try:
        with os.scandir(path.parent) as entries:
            found = [
                Path(e.path)
                for e in entries
                if e.name.startswith(prefix)
                and not e.name.endswith(".lock")
                and e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return
    for leftover in found:
        if not leftover.name.endswith(_LOCKED_PART):
            # An older fiq-gym's, never locked: its writer may be alive unless it is a day old.
            if time.time() - _mtime(leftover) > _UNLOCKED_STALE_SECONDS:
                leftover.unlink(missing_ok=True)
                log.warning(
                    "fiq-gym: removed %s, an unfinished write of %s by an older fiq-gym", leftover, path
                )
            continue
        try:
            fd = os.open(leftover, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            # Locked: a live writer's. Free but renamed meanwhile: a writer that just finished.
            if _lock_or_skip(fd, blocking=False) and _same_file(fd, leftover):
                leftover.unlink()
                log.warning(
                    "fiq-gym: removed %s, left by a process that died while writing %s", leftover, path
                )
        except OSError:
            pass  # gone meanwhile, no locks on this file system, or not ours to delete
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed over it when
    complete. Temporaries of earlier writers of ``path`` that were killed are removed first."""
    path = Path(path)
    try:
        _make_parent(path)
        _reclaim_file_temporaries(path)
        fd, tmp = _file_temporary(path)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        # mkstemp makes owner-only files; give the result the usual umask-based mode.
        os.chmod(tmp, 0o666 & ~_umask())
        # The lock lives as long as ``fd``, which stays open until the rename is done.
        with open(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _naming(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# --- directories -----------------------------------------------------------------------------


def _temp_name(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.tmp-{tag}"


def _old_name(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.old-{tag}"


def _lock_name(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.tmp-{tag}.lock"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


class _WriterLock:
    """The lock file that says "writer ``tag`` of ``path`` is alive" while it is held."""

    def __init__(self, path: Path) -> None:
        while True:
            tag = uuid.uuid4().hex[:8]
            lock = _lock_name(path, tag)
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o644)
            except FileExistsError:  # another writer drew the same tag
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                    os.close(fd)
                    raise
                # A file system without locks: write unlocked; cleaners that cannot lock the
                # file either will then leave our temporary directory alone.
            # A cleaner may have taken and deleted the fresh file before we locked it (it
            # looked like a dead writer's); then our lock guards nothing, so start over.
            if _same_file(fd, lock):
                break
            os.close(fd)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.tag, self.path, self._fd = tag, lock, fd

    def release(self) -> None:
        if _same_file(self._fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)


@contextmanager
def _dead_writer(path: Path, tag: str) -> Iterator[bool | None]:
    """Yield True while holding the lock of writer ``tag`` of ``path`` because it is dead,
    False if it is alive (or another cleaner is on it), None if it left no lock file (an
    older fiq-gym, or a writer that finished between our look and now)."""
    lock = _lock_name(path, tag)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held (BlockingIOError), or no locks on this file system: hands off
            yield False
            return
        if not _same_file(fd, lock):
            yield False
            return
        yield True
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


# Leftovers without a lock file come from a fiq-gym that predates the locks, so whether their
# writer lives is unknown. None of its writes takes a day; older ones are safe to delete.
_UNLOCKED_STALE_SECONDS = 24 * 3600


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def recover_directory(path: str | os.PathLike) -> None:
    """Tidy up after writers of directory ``path`` that died: put back a directory whose
    replacement was interrupted, and delete their temporary and set-aside copies.

    Called by :func:`atomic_directory` before it writes, and by readers that find ``path``
    missing. Leftovers of live writers are not touched; leftovers without a lock file (from
    a fiq-gym older than the lock files) are reported, and deleted once a day old.
    """
    path = Path(path)
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    except OSError:
        return  # no parent directory (nothing written yet) or not readable: nothing to do
    prefix = len(path.name) + 2
    # What each writer (tag) left: its set-aside old copy, its temporary directory, its lock.
    left: dict[str, dict[str, Path]] = {}
    for p in siblings:
        rest = p.name[prefix:]
        if rest.startswith("old-"):
            left.setdefault(rest[4:], {})["old"] = p
        elif rest.startswith("tmp-") and rest.endswith(".lock"):
            left.setdefault(rest[4:-5], {})["lock"] = p
        elif rest.startswith("tmp-") and p.is_dir():  # files' temporaries are atomic_write_bytes'
            left.setdefault(rest[4:], {})["tmp"] = p
    # Newest set-aside copy first: if several replacements died, the latest one is restored.
    order = sorted(left, key=lambda t: _mtime(left[t]["old"]) if "old" in left[t] else -1.0, reverse=True)
    for tag in order:
        old, tmp = left[tag].get("old"), left[tag].get("tmp")
        with _dead_writer(path, tag) as dead:
            if dead is False:
                continue
            if dead is None:
                for leftover in (old, tmp):
                    if leftover is None or not leftover.exists():
                        continue
                    if time.time() - _mtime(leftover) > _UNLOCKED_STALE_SECONDS:
                        shutil.rmtree(leftover, ignore_errors=True)
                        log.warning(
                            "fiq-gym: removed %s, an unfinished write of %s by an older fiq-gym "
                            "(untouched for over a day)",
                            leftover,
                            path,
                        )
                    else:
                        log.warning(
                            "fiq-gym: %s looks like an unfinished write of %s by an older fiq-gym; "
                            "delete it if no process is writing %s",
                            leftover,
                            path.name,
                            path,
                        )
                continue
            if old is not None and not os.path.lexists(path):
                os.rename(old, path)
                log.warning(
                    "fiq-gym: restored %s from %s: the process replacing it died before the new "
                    "version was in place",
                    path,
                    old.name,
                )
            elif old is not None:
                shutil.rmtree(old, ignore_errors=True)
                log.warning("fiq-gym: removed %s, set aside by a writer of %s that died", old, path)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                log.warning("fiq-gym: removed %s, left by a process that died while writing %s", tmp, path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap directories ``a`` and ``b`` in one atomic step; False where that is unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot replace {b} with {a}: {os.strerror(err)}")


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it takes the place of ``path``.

    If ``path`` exists and ``overwrite`` is false, :class:`FileExistsError` is raised before
    anything is written. With ``overwrite``, the old directory stays where it is until the
    new one replaces it (see the module docstring for what a crash leaves).
    """
    path = Path(path)
    recover_directory(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; choose another output directory or replace it (--overwrite on the command line, overwrite=True in Python)"
        )
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the directory", str(path))
    try:
        _make_parent(path)
        lock = _WriterLock(path)
    except OSError as e:
        raise _naming(e, path) from None
    tmp = _temp_name(path, lock.tag)
    try:
        tmp.mkdir()
        try:
            yield tmp
            _usual_modes(tmp)
            _fsync_directory(tmp)
            if path.exists():
                if not overwrite:  # someone else finished first (e.g. a parallel cache build)
                    raise FileExistsError(f"{path} appeared while it was being written")
                if _exchange(tmp, path):
                    # ``tmp`` now holds the old directory; a crash here leaves it to the
                    # next writer's recover_directory.
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    old = _old_name(path, lock.tag)
                    os.rename(path, old)
                    # A crash here leaves no ``path``: recover_directory moves ``old`` back.
                    try:
                        os.rename(tmp, path)
                    except BaseException:
                        os.rename(old, path)
                        raise
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, path)
            _fsync_directory(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        lock.release()


def _usual_modes(directory: Path) -> None:
    """Give every file in ``directory`` the mode a plain ``open()`` would (0666 less the umask):
    some writers create theirs private (safetensors writes 0600), unlike the rest of a run."""
    mode = 0o666 & ~_umask()
    for root, _, files in os.walk(directory):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink() and file.stat().st_mode & 0o777 == 0o600 and mode != 0o600:
                file.chmod(mode)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for a read-modify-write of it, across threads and
    processes: an ``flock`` on ``.NAME.lock`` beside it (kept; the kernel releases the lock
    when its holder dies, even by ``kill -9``). Every writer of the file must take it."""
    path = Path(path)
    _make_parent(path)
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def staging_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file at ``path`` for as long as the ``with`` block runs, removed after it.
    Its writer holds an ``flock`` on ``path.lock`` meanwhile, so :func:`reclaim_staging` can
    tell a killed writer's leftover from a live one's."""
    path = Path(path)
    _make_parent(path)
    lock = path.with_name(path.name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A cleaner may have deleted the fresh lock file before we locked it (it looked like
        # the lock of a writer killed before its staging file existed): take a new one.
        if _same_file(fd, lock):
            break
        os.close(fd)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        lock.unlink(missing_ok=True)
        os.close(fd)


def reclaim_staging(directory: str | os.PathLike, pattern: str) -> list[Path]:
    """Remove the files matching ``pattern`` in ``directory`` that :func:`staging_file` writers
    left when they were killed (their lock is free); return what was removed."""
    removed = []
    for path in Path(directory).glob(pattern):
        if path.name.endswith(".lock"):
            continue
        lock = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                continue
            path.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            removed.append(path)
            log.warning("removed %s, left by a writer that was killed", path)
        finally:
            os.close(fd)
    # Locks without their staging file: their writer was killed before it made the file or
    # after it removed it.
    for lock in Path(directory).glob(pattern + ".lock"):
        staged = lock.with_name(lock.name[: -len(".lock")])
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                continue
            if _same_file(fd, lock) and not os.path.lexists(staged):
                lock.unlink(missing_ok=True)
                log.warning("removed %s, left by a writer that was killed", lock)
        finally:
            os.close(fd)
    return removed
