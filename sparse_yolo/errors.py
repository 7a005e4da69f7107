"""One exception type for every user-facing failure.

The CLI prints ``error: <message>`` on one line and exits nonzero; no traceback.
Messages name the file and the problem, e.g. ``big.tif: truncated TIFF (read failed at row 512)``.
"""

from __future__ import annotations

from pathlib import Path


class SparseYoloError(Exception):
    """A user-facing failure whose message is a single line."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        message = " ".join(str(message).split())  # one line, always
        super().__init__(f"{path}: {message}" if path is not None else message)
