"""Atomic file writes: a temporary file beside the target, then a rename.

Every output of the tool (detections, previews, stats, checkpoints) goes through here, so a
failure never leaves a partial file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sparse_yolo.errors import SparseYoloError


@contextmanager
def atomic_open(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is deleted, so ``path`` is either untouched or
    complete. ``OSError`` becomes ``SparseYoloError``; other exceptions pass through.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise SparseYoloError(f"output directory {path.parent} does not exist", path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:  # 0o666 so the umask applies, like a plain open() (mkstemp would force 0o600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise SparseYoloError(f"cannot write: {exc.strerror or exc}", path) from exc
    try:
        if binary:
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        with fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SparseYoloError(f"cannot write: {exc.strerror or exc}", path) from exc
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` for libraries that write by name (GDAL, Arrow).

    The temporary name keeps ``path``'s suffix; on success it replaces ``path`` atomically,
    on any exception it (and any sidecar the library left, e.g. SQLite's journal) is deleted.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise SparseYoloError(f"output directory {path.parent} does not exist", path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        for leftover in path.parent.glob(f"{tmp.name}*"):
            leftover.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SparseYoloError(f"cannot write: {exc.strerror or exc}", path) from exc
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path) as f:
        json.dump(data, f, indent=2)
