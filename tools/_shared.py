"""Where the tools find the shared weights and imagery."""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    """``$SPARSE_YOLO_SHARED``, else the ``shared`` folder beside the repository."""
    env = os.environ.get("SPARSE_YOLO_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
