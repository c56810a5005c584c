"""Writing files so that a crash, a kill or a full disk never leaves a half-written one in place."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from artgan.errors import ArtGANError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space, or over quota


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (``.<name>.<pid>.tmp``), flush and fsync it, then
    ``os.replace`` it onto ``path`` (atomic on POSIX and Windows) and fsync the folder so the rename is durable.
    On any error the temporary file is removed and ``path`` is untouched; a full disk or quota becomes one
    :class:`DiskFull` paragraph naming the path, the free space and the space needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = None
    try:
        with open(tmp, "wb") as f:
            out = _WriteErrors(f)
            write(out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else getattr(out, "error", None)
        if cause is not None and cause.errno in DISK_FULL:
            raise DiskFull(path, written, cause.errno) from err
        raise
    _fsync_dir(path.parent)
    return path


class DiskFull(ArtGANError, OSError):
    """A write failed for lack of space (ENOSPC) or quota (EDQUOT); the file it was replacing is intact. Still an
    OSError, so callers that carry on without an optional file (the feature cache) keep doing so."""

    def __init__(self, path: Path, written: int, code: int = errno.ENOSPC):
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        # Roughly what the file needs: the size of what it replaces or of a sibling of its kind (the previous
        # checkpoint); at least what was written before the disk filled.
        size = max([p.stat().st_size for p in {path, *path.parent.glob(f"*{path.suffix}")} if p.is_file()] or [0])
        need = (f"about {_size(size)}" if size > written else
                f"more than the {_size(written)} written before the disk filled")
        kept = f"; the previous {path.name} is intact" if path.is_file() else ""
        last = path if path.is_file() else path.parent / "last.ckpt"
        again = (f"resume with the same command plus ckpt_path={last}" if path.suffix == ".ckpt" and last.is_file()
                 else "run the same command again")
        super().__init__(
            f"No space left to write {path}: the disk (or your quota) is full, {_size(free)} free in {path.parent} "
            f"and the file needs {need}{kept}. Free some space there (or point the output at "
            f"another disk), then {again}."
        )
        self.path, self.errno = path, code


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class _WriteErrors:
    """The file, remembering an OSError from ``write``: torch.save's zip writer turns it into a bare RuntimeError
    ("unexpected pos ..."), which would hide a full disk."""

    def __init__(self, f: IO[bytes]):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
