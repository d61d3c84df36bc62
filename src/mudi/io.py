"""File output that survives interruptions, full disks and concurrent runs.

- **Atomic writes**: every file is written to a temporary file beside the target, then renamed over it, so an
  interrupted run never leaves a truncated image, JSON or weights file behind. New files get the mode the
  umask allows (``0666 & ~umask``, as ``open()`` would); a rewritten file keeps its mode.
- **Output folders** are created and checked (a folder, writable, with free space) by
  :func:`prepare_output_dir` before a workflow loads any model, so a read-only target fails in a second, not
  after an hour of sampling.
- **Locks**: :class:`OutputLock` keeps two runs from writing one folder; a lock left by a dead process is
  taken over, with a note.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mudi.errors import MudiError

log = logging.getLogger(__name__)
LOCK_FILE = ".mudi.lock"
#: Free space a verb needs before its first write (its first images, configs and small files).
MIN_FREE_BYTES = 16 * 1024 * 1024


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def new_dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def os_error_message(e: OSError, what: str = "") -> str:
    """``"<path>: <cause>"`` for a file-system error, with a fix for the common ones."""
    path = e.filename or what or "(unknown path)"
    cause = e.strerror or str(e)
    fix = {errno.ENOSPC: "free some space or choose another output folder",
           errno.EACCES: "choose a folder you can write to",
           errno.EPERM: "choose a folder you can write to",
           errno.EROFS: "the file system is read-only: choose another output folder",
           errno.ENOTDIR: "a path component is a file, not a folder: choose another path",
           errno.EEXIST: "remove it or choose another path",
           errno.EDQUOT: "your disk quota is full: free some space"}.get(e.errno or 0)
    return f"{path}: {cause}" + (f"; {fix}" if fix else "")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path`` atomically.

    The result has the mode of the file it replaces, or ``0666 & ~umask`` for a new file. On any error the
    temporary file is removed and the previous ``path`` (if any) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path`` (replacing an older one).

    The old folder is first renamed aside, so ``path`` is always either the old or the new complete folder
    (or, for an instant, absent); the temporary folder is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, new_dir_mode())
        mode = new_file_mode()
        for f in tmp.rglob("*"):
            os.chmod(f, new_dir_mode() if f.is_dir() else mode)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}-old-{os.getpid()}.tmp"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))


def save_image_atomic(path: str | os.PathLike, image: Image.Image | np.ndarray, **save_kwargs: Any) -> None:
    """Save a PIL image or an array (HxWx3 uint8 RGB, or HxW bool/uint8 mask) atomically."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        image = Image.fromarray(arr)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **save_kwargs)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# ------------------------------------------------------------------------------------------------ folders
def prepare_output_dir(path: str | os.PathLike, what: str = "output folder",
                       min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create ``path`` (and its parents) and check that it is a writable folder with ``min_free_bytes``
    free: a one-line :class:`MudiError` otherwise. Call it before loading any model."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MudiError(f"{path}: the {what} is a file, not a folder; choose another path or remove the file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mudi-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MudiError(f"cannot write the {what}: {os_error_message(e, str(path))}") from None
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise MudiError(f"{path}: only {free / 2**20:.1f} MiB free on its disk, the {what} needs at least "
                        f"{min_free_bytes / 2**20:.0f} MiB; free some space or choose another folder")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """An exclusive lock on an output folder (``FOLDER/.mudi.lock``, an ``flock`` the OS drops when the process
    dies) for as long as a run writes it.

    A second run on the same folder gets a one-line :class:`MudiError` naming the holder (pid, host, since).
    A lock file left by a process that is gone is taken over, with a note in the log.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self._fd: int | None = None
        self.took_over: dict | None = None

    def acquire(self) -> OutputLock:
        prepare_output_dir(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                   if holder else "another process")
            raise MudiError(f"{self.folder} is in use by another mudi {self.what} ({who}); wait for it to finish "
                            "or choose another --output_dir") from None
        previous = _read_holder(fd)
        if previous and previous.get("pid") != os.getpid():
            same_host = previous.get("host") == socket.gethostname()
            if not same_host or not _pid_alive(int(previous.get("pid", -1))):
                self.took_over = previous
                log.warning("note: %s held a lock of process %s (%s), which is gone; taking it over", self.folder,
                            previous.get("pid"), previous.get("host"))
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file: nobody holds it
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder(folder: str | os.PathLike) -> int | None:
    """The pid of the live process on this machine that holds ``folder``'s :class:`OutputLock`, or None (no lock,
    a released one, a process that is gone, or another host's)."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        holder = _read_holder(fd)
    finally:
        os.close(fd)
    if holder.get("host") != socket.gethostname():
        return None
    try:
        pid = int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return None
    return pid if pid > 0 and _pid_alive(pid) else None


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        data = json.loads(text) if text else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
